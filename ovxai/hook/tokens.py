"""Vision transformers: where ViT-ReciproCAM (Byun & Lee, arXiv:2310.02588) cuts one, found by structure.

The target is the input X (B, A + h*w, D) of one transformer block: A auxiliary tokens (CLS, distillation,
registers) followed by the h x w grid of patch tokens (or a (B, h, w, D) token map, as in Swin). Copy n
multiplies the patch tokens by mask M_n (one-hot, or the 3 x 3 Gaussian) and keeps the auxiliary ones; the
mask is applied to the block's residual input X and to the output of its first norm, LN1(X), computed on the
unmasked X (masked tokens enter the attention as zeros). The rest of the network runs on every copy and copy
n's class scores are the map's value at n, normalised as for CNNs. A block is found from each attention (a
softmax over keys, or OpenVINO's ScaledDotProductAttention) and the last indexed part of its module path.
How the copies are computed: :mod:`ovxai.hook.paths.vit_short` (exact, short) and :mod:`.vit_general`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovxai.errors import OvxaiError
from ovxai.graph.view import GraphView, Kind, Node
from ovxai.hook.tail import TailPlan, plan_tail
from ovxai.hook.target import leaving_tensors, scope_paths

ATTENTION_OPS = frozenset({"Softmax", "ScaledDotProductAttention"})
# Gaussian slots: (row offset, column offset, weight x 16); one-hot keeps the centre only.


@dataclass(frozen=True)
class TokenPlan:
    """Where ViT-ReciproCAM cuts a transformer: a block's input tokens and what the copies need of it."""

    block: str  # the block's module path ('blocks.11')
    blocks: tuple[str, ...]  # every block feeding the prediction, in order
    target: str  # X: the block's input tokens (B, A + h*w, D)
    normed: str  # LN1(X): the output of the block's first norm
    norm_nodes: frozenset[str]  # the nodes computing it (the copies read the masked original instead)
    grid: tuple[int, int]  # h, w of the patch grid
    aux: int  # A: tokens before the grid
    tail: TailPlan  # the nodes from X to the prediction

    @property
    def tokens(self) -> int:
        return self.aux + self.grid[0] * self.grid[1]


def block_of(scope: str) -> str | None:
    """The transformer block a node's module path lies in: the path up to its last indexed part.

    'blocks.11.attn' -> 'blocks.11'; 'encoder.layers.encoder_layer_11.self_attention' ->
    'encoder.layers.encoder_layer_11'; 'layers.3.blocks.1.attn' -> 'layers.3.blocks.1'."""
    paths = [p for p in scope_paths(scope) if p[-1].isdigit()]
    return paths[-1] if paths else None


def transformer_blocks(graph: GraphView, prediction: str) -> list[str]:
    """Blocks holding an attention (a softmax over keys) that feeds the prediction and reading tokens, in
    graph order. Attention inside a convolutional network (blocks reading (B, C, H, W) maps) is not one:
    the CNN path explains those."""
    feeding = graph.ancestors([prediction])
    blocks: dict[str, None] = {}
    for node in graph.nodes:
        if node.name in feeding and node.op in ATTENTION_OPS and _over_keys(graph, node):
            block = block_of(node.scope)
            if block is not None:
                blocks[block] = None
    return [b for b in blocks if any(_is_tokens(graph, i) for i in _entering(graph, b))]


def _over_keys(graph: GraphView, node: Node) -> bool:
    """An attention's softmax: (..., queries, keys) scores, not a classifier's (B, K) probabilities."""
    shape = graph.tensor(node.outputs[0]).shape
    return node.op != "Softmax" or (shape is not None and len(shape) >= 3 and shape[-1] == shape[-2])


def _entering(graph: GraphView, block: str) -> set[str]:
    """Activations read inside ``block`` and produced before it."""
    inside = {n.name for n in graph.nodes if block in scope_paths(n.scope)}
    return {
        i
        for n in graph.nodes
        if n.name in inside
        for i in n.inputs
        if i and graph.kind.get(i) is Kind.ACTIVATION and graph.producer.get(i, n).name not in inside
    }


def _is_tokens(graph: GraphView, name: str) -> bool:
    """(B, tokens, D), or a (B, h, w, D) token map -- not a (B, C, H, W) feature map."""
    t = graph.tensor(name)
    return t.is_float and (t.rank == 3 or (t.rank == 4 and graph.spatial_axes.get(name) != (2, 3)))


def plan_tokens(graph: GraphView, prediction: str, layer: str | None) -> TokenPlan | None:
    """The ViT cut for ``layer`` (a block's module path; None: the last block), or None for a non-transformer
    model, or for a ``layer`` outside the blocks (then the CNN path explains that feature map)."""
    blocks = transformer_blocks(graph, prediction)
    if not blocks:
        feeding = graph.ancestors([prediction])
        unplaced = [
            n
            for n in graph.nodes
            if n.name in feeding and n.op in ATTENTION_OPS and not block_of(n.scope) and _over_keys(graph, n)
        ]
        if unplaced and layer is None and not any(n.scope for n in graph.nodes):  # torch.export's IRs
            raise OvxaiError(
                f"the model has attention ('{unplaced[0].name}') but no module paths that place it in blocks",
                "export it with torch.onnx.export or ov.convert_model(module, example_input=...), which keep them",
            )
        return None  # attention outside any block (or none): the CNN path explains the last feature map
    if layer is None:
        block = blocks[-1]
    elif layer in blocks:
        block = layer
    else:
        inside = [b for b in blocks if layer.startswith(b + ".")]
        holding = [b for b in blocks if b.startswith(layer + ".")]
        if not inside and not holding:
            known = layer in graph.producer or layer in graph.aliases or any(n.name == layer for n in graph.nodes)
            if not known and not leaving_tensors(graph, layer):
                raise OvxaiError(f"layer '{layer}' not found in the model", f"name a block: {_listed(blocks)}")
            return None  # a layer before the blocks (the patch embedding): the CNN path explains its map
        found = f"'{layer}' is inside block '{inside[0]}'" if inside else f"'{layer}' holds {len(holding)} blocks"
        raise OvxaiError(
            f"layer {found}: ViT-ReciproCAM explains a transformer block's input",
            f"name a block: {_listed(blocks)}",
        )
    return _plan_block(graph, prediction, block, tuple(blocks))


def _listed(blocks: list[str]) -> str:
    shown = blocks if len(blocks) <= 4 else [*blocks[:2], "...", *blocks[-2:]]
    return ", ".join(shown)


def _plan_block(graph: GraphView, prediction: str, block: str, blocks: tuple[str, ...]) -> TokenPlan:
    inside = [n for n in graph.nodes if block in scope_paths(n.scope)]
    names = {n.name for n in inside}
    entering = _entering(graph, block)
    tokens = [i for i in entering if _is_tokens(graph, i)]
    if len(tokens) != 1:
        found = ", ".join(f"'{i}' ({graph.tensor(i).describe()})" for i in sorted(entering)) or "none"
        raise OvxaiError(
            f"block '{block}' does not read one (B, tokens, D) or (B, h, w, D) tensor from before it (found: {found})",
            f"name another block: {_listed(list(blocks))}",
        )
    target = tokens[0]
    shape = graph.tensor(target).shape
    assert shape is not None
    norm_scopes = {
        c.scope for c in graph.consumers.get(target, []) if c.name in names and c.scope.startswith(block + ".")
    }
    normed = [t for s in norm_scopes for t in leaving_tensors(graph, s)]
    if len(norm_scopes) != 1 or len(normed) != 1 or graph.tensor(normed[0]).shape != shape:
        raise OvxaiError(
            f"block '{block}' has no first norm reading its input (modules reading it: {sorted(norm_scopes)})",
            "ViT-ReciproCAM needs pre-norm blocks (x + attn(norm1(x)))",
        )
    (scope,) = norm_scopes
    h, w = _grid(graph, target)
    count = shape[1] if len(shape) == 3 else h * w
    if not isinstance(count, int) or count < h * w:
        raise OvxaiError(
            f"block '{block}' reads {count} tokens, which is not A + h*w for the {h} x {w} patch grid",
            "export the model with a fixed image size (--input-shape)",
        )
    return TokenPlan(
        block=block,
        blocks=blocks,
        target=target,
        normed=normed[0],
        norm_nodes=frozenset(n.name for n in inside if scope in scope_paths(n.scope)),
        grid=(h, w),
        aux=count - h * w,
        tail=plan_tail(graph, target, prediction),
    )


def _grid(graph: GraphView, target: str) -> tuple[int, int]:
    """h, w of the token grid: the map's own (B, h, w, D), or the last (B, D, h, w) map before a token
    sequence (the patch embedding)."""
    shape = graph.tensor(target).shape
    if shape is not None and len(shape) == 4:
        if isinstance(shape[1], int) and isinstance(shape[2], int):
            return shape[1], shape[2]
        raise OvxaiError(
            f"the tokens '{target}' ({graph.tensor(target).describe()}) have no fixed grid",
            "export the model with a fixed image size (--input-shape)",
        )
    feeding = graph.ancestors([target])
    maps = [
        shape
        for node in graph.nodes
        if node.name in feeding and node.op == "Conv"
        for shape in [graph.tensor(node.outputs[0]).shape]
        if shape is not None and len(shape) == 4
    ]
    if not maps or not isinstance(maps[-1][2], int) or not isinstance(maps[-1][3], int):
        raise OvxaiError(
            "cannot find the patch grid: no patch-embedding convolution with a fixed output size feeds the blocks",
            "export the model with a fixed image size (--input-shape)",
        )
    return maps[-1][2], maps[-1][3]
