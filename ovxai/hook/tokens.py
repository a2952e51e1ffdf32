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
from ovxai.graph.view import SHAPE_OPS, GraphView, Kind, Node
from ovxai.hook.tail import TailPlan, plan_tail
from ovxai.hook.target import is_feature_map, leaving_tensors, scope_paths

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
    """An attention's softmax, not a classifier's (B, K) probabilities: its scores are a product of two
    activations (q k^T, through a scale, a bias or a mask), whatever shapes the file records (a relative
    position bias or a subsampled query set leave them unknown or not square)."""
    if node.op != "Softmax":
        return True
    todo, seen = [node.inputs[0]], set()
    while todo:
        producer = graph.producer.get(todo.pop())
        if producer is None or producer.name in seen:
            continue
        seen.add(producer.name)
        activations = [i for i in producer.inputs if i and graph.kind.get(i) is Kind.ACTIVATION]
        if producer.op == "MatMul" and len(activations) == 2:
            return True
        if producer.op in _SCORE_STEPS:
            todo.extend(activations)
    return False


# What lies between q k^T and the softmax: a scale, a position bias, a mask, a type change.
_SCORE_STEPS = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Cast", "Reshape", "Transpose", "Identity"})


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
        if hybrid(graph, prediction, blocks[-1]):
            return None  # a CNN with attention inside (MobileViT): its last feature map is the natural target
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


def hybrid(graph: GraphView, prediction: str, last: str) -> bool:
    """Whether a convolutional feature map (B, C, H, W), H*W > 1, lies between the last block and the prediction:
    the blocks are a CNN's inner transformers (MobileViT unfolds its maps into patches for them), not a ViT's."""
    after: set[str] = set()
    for out in leaving_tensors(graph, last):
        after |= graph.descendants(out)
    feeding = graph.ancestors([prediction])
    return any(
        is_feature_map(graph, out) and _spatial_map(graph, out)
        for node in graph.nodes
        if node.name in after and node.name in feeding and node.op == "Conv"
        for out in node.outputs
    )


def _spatial_map(graph: GraphView, name: str) -> bool:
    shape = graph.tensor(name).shape or ()
    return len(shape) == 4 and not (
        isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] * shape[3] <= 1
    )


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
    scope, normed = _first_norm(graph, block, target, names)
    count = shape[1] if len(shape) == 3 else None
    h, w = _grid(graph, target, count, blocks)
    if len(shape) == 4:
        count = h * w
    if not isinstance(count, int):
        raise OvxaiError(f"block '{block}' reads an unknown number of tokens ({count})", _fix_for_unknown(graph))
    if count < h * w:
        raise OvxaiError(
            f"block '{block}' reads {count} tokens, fewer than the {h} x {w} grid of the map before it",
            f"name another block: {_listed(list(blocks))}",
        )
    return TokenPlan(
        block=block,
        blocks=blocks,
        target=target,
        normed=normed,
        norm_nodes=frozenset(n.name for n in inside if scope and scope in scope_paths(n.scope)),
        grid=(h, w),
        aux=count - h * w,
        tail=plan_tail(graph, target, prediction),
    )


# Ops that weigh tokens against each other or project them: a module that holds one is no per-token norm.
_MIXING_OPS = ATTENTION_OPS | {"MatMul", "Gemm", "Conv", "Einsum"}


def _first_norm(graph: GraphView, block: str, target: str, inside: set[str]) -> tuple[str, str]:
    """The module of the block's first norm and its output, LN1(X): the one module inside the block that reads X
    and acts on each token alone (LayerNorm, RMSNorm, BatchNorm: no product across tokens or features), its one
    leaving tensor shaped as X. A block whose input goes straight into its projections (LeViT: Linear +
    BatchNorm after it) has none: ('', X), and masking X is all the copies need."""
    readers = [c for c in graph.consumers.get(target, []) if c.name in inside and c.op not in SHAPE_OPS]
    scopes = {c.scope for c in readers if c.scope.startswith(block + ".")}
    shape = graph.tensor(target).shape
    norms = []
    for scope in sorted(scopes):
        module = scope.removeprefix(block + ".").split(".")[0]
        path = f"{block}.{module}"
        nodes = [n for n in graph.nodes if n.name in inside and path in scope_paths(n.scope)]
        leaving = leaving_tensors(graph, path)
        if (
            len(leaving) == 1
            and graph.tensor(leaving[0]).shape == shape
            and not any(n.op in _MIXING_OPS for n in nodes)
        ):
            norms.append((path, leaving[0]))
    if len({p for p, _ in norms}) > 1:
        raise OvxaiError(
            f"block '{block}' has {len(norms)} norms reading its input ({', '.join(sorted(p for p, _ in norms))})",
            "ViT-ReciproCAM needs blocks with one first norm (x + attn(norm1(x)))",
        )
    return norms[0] if norms else ("", target)


def _fix_for_unknown(graph: GraphView) -> str:
    """What to do about a token count or grid the file does not record: pin a free image size; or, where the
    size is fixed and only the file's shape inference lost it, re-export on a route that records it."""
    if not all(isinstance(d, int) for d in graph.input_dims()[1:]):
        return "pin the image size with --input-shape, e.g. ?,3,224,224"
    return (
        "the image size is fixed but the file's shapes lose the token count: re-export with "
        "torch.onnx.export(dynamo=True) or ov.convert_model(module)"
    )


def _grid(graph: GraphView, target: str, count: object, blocks: tuple[str, ...]) -> tuple[int, int]:
    """h, w of the grid the block reads: a token map's own (B, h, w, D); else the last 2-D map before the tokens
    that holds at most ``count`` positions and more than the tokens beside it -- the patch embedding's
    (B, D, h, w), or a map the tokens were folded into later (Swin's patch merging, LeViT's subsampling
    (B, h, w, D)): the grid of the patch embedding is not the last stage's."""
    shape = graph.tensor(target).shape
    if shape is not None and len(shape) == 4:
        if isinstance(shape[1], int) and isinstance(shape[2], int):
            return shape[1], shape[2]
        raise OvxaiError(
            f"the tokens '{target}' ({graph.tensor(target).describe()}) have no fixed grid", _fix_for_unknown(graph)
        )
    feeding = graph.ancestors([target])
    batch = shape[0] if shape else None
    for node in reversed(graph.nodes):
        if node.name not in feeding:
            continue
        for out in node.outputs:
            grid = _map_grid(graph, out, batch)
            if grid is not None and (not isinstance(count, int) or 0 <= count - grid[0] * grid[1] < grid[0] * grid[1]):
                return grid
    raise OvxaiError(
        f"cannot find the patch grid of the tokens '{target}' ({graph.tensor(target).describe()}): "
        "no map of fixed size with as many positions feeds them",
        _fix_for_unknown(graph),
    )


def _map_grid(graph: GraphView, name: str, batch: object) -> tuple[int, int] | None:
    """(h, w) of a 4-D float activation of the same batch read as a map: channels-first where its axes are the
    image's (a convolution's output), else channels-last (B, h, w, D), as token maps are laid out."""
    t = graph.tensor(name)
    if t.rank != 4 or not t.is_float or graph.kind.get(name) is not Kind.ACTIVATION:
        return None
    assert t.shape is not None
    if _named(batch) and _named(t.shape[0]) and t.shape[0] != batch:
        return None  # windows or heads folded into the batch
    h, w = (t.shape[2], t.shape[3]) if graph.spatial_axes.get(name) == (2, 3) else (t.shape[1], t.shape[2])
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 1 and w > 1 else None


def _named(dim: object) -> bool:
    """A dimension known by a name the exporter gave (not an inference placeholder)."""
    return isinstance(dim, int) or (isinstance(dim, str) and not dim.startswith("unk__"))
