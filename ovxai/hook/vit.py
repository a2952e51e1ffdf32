"""ViT-ReciproCAM (Byun & Lee, arXiv:2310.02588) inside the graph, for vision transformers.

The target is the input X (B, A + h*w, D) of one transformer block: A auxiliary tokens (CLS,
distillation, registers) followed by the h x w grid of patch tokens. Copy n multiplies the patch
tokens by mask M_n (one-hot, or the 3 x 3 Gaussian) and keeps the auxiliary ones; the mask is applied
to the block's residual input X and to the output of its first norm, LN1(X), computed on the
unmasked X (masked tokens enter the attention as zeros). The rest of the network runs on every copy
and copy n's class scores are the map's value at n, normalised as for CNNs.

**The exact short sequence.** Inside copy n every masked-out token is the zero token (0 in both X
and LN1(X)): identical, so every query sees identical keys and values for them, and identical
tokens stay identical through every later layer (attention is permutation-equivariant; the position
embedding was added before the blocks). A copy is therefore exactly represented by

    [A auxiliary tokens] + [S kept slots (1 one-hot, 9 Gaussian)] + [one zero token]

with multiplicities 1 ... 1, N - S: each attention adds log(multiplicity) to the logits of its keys
(exp(s + log c) = c exp(s): the zero token counted N - S times) and a mean over tokens weighs it by
its multiplicity. A Gaussian slot outside the grid is itself a zero token, counted once. So the
block runs on A + S + 1 tokens per copy instead of A + N -- exact, with no (N, A + N, D) tensor.
Two more exact savings on top (see TokenPlan): the q, k, v projections are affine per token, so the
copies' rows are gathered from the original path's outputs (``affine``); and a head that reads only
the CLS / distillation rows needs only those rows after the last attention (``queries``,
``readout``). The general path (``fast_path=False``) runs the full masked sequences and is kept to
prove the two equal. Swin's token maps (windowed attention) take the general path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from ovxai.errors import OvxaiError
from ovxai.graph.ops import END, Ops
from ovxai.graph.view import GraphView, Kind, Node
from ovxai.hook.options import HookOptions
from ovxai.hook.recipro import ReciproCamHook
from ovxai.hook.tail import PER_POSITION_OPS, TailPlan, plan_tail
from ovxai.hook.target import leaving_tensors, scope_paths

T = TypeVar("T")

ATTENTION_OPS = frozenset({"Softmax", "ScaledDotProductAttention"})
# Gaussian slots: (row offset, column offset, weight x 16); one-hot keeps the centre only.
_GAUSSIAN = tuple((di, dj, (2 - abs(di)) * (2 - abs(dj))) for di in (-1, 0, 1) for dj in (-1, 0, 1))
_ONE_HOT = ((0, 0, 16),)


@dataclass(frozen=True)
class TokenPlan:
    """Where ViT-ReciproCAM cuts a transformer, and whether the exact short sequence applies."""

    block: str  # the block's module path ('blocks.11')
    blocks: tuple[str, ...]  # every block feeding the prediction, in order
    target: str  # X: the block's input tokens (B, A + h*w, D)
    normed: str  # LN1(X): the output of the block's first norm
    norm_nodes: frozenset[str]  # the nodes computing it (the copies read the masked original instead)
    grid: tuple[int, int]  # h, w of the patch grid
    aux: int  # A: tokens before the grid
    tail: TailPlan  # the nodes from X to the prediction
    short: str | None  # why the short sequence does not apply; None when it does
    readout: frozenset[str] = frozenset()  # per-token nodes whose only use is the head's auxiliary rows
    rows: int = 0  # how many leading rows the head reads from them
    affine: tuple[Node, ...] = ()  # per-token affine ops reading LN1(X) (the q, k, v projections)
    queries: frozenset[str] = frozenset()  # the last attention and the layout ops from it to the readout: its rows only

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
    tail = replace(plan_tail(graph, target, prediction), shortcut=None)
    plan = TokenPlan(
        block=block,
        blocks=blocks,
        target=target,
        normed=normed[0],
        norm_nodes=frozenset(n.name for n in inside if scope in scope_paths(n.scope)),
        grid=(h, w),
        aux=count - h * w,
        tail=tail,
        short=None,
    )
    plan = replace(plan, short=_short_refusal(graph, plan))
    if plan.short is not None:
        return plan
    readout, rows = _readout(graph, plan)
    plan = replace(plan, readout=readout, rows=rows, affine=_affine_projections(graph, plan))
    return replace(plan, queries=_readout_queries(graph, plan))


def _readout_queries(graph: GraphView, plan: TokenPlan) -> frozenset[str]:
    """The attention whose output reaches the readout only through layout ops (its heads transposed and
    merged back), with those ops: only its first ``rows`` queries are ever read, so only they are computed."""
    frontier = {
        i
        for n in plan.tail.nodes
        if n.name in plan.readout
        for i in n.inputs
        if graph.kind.get(i) is Kind.ACTIVATION and graph.producer.get(i, n).name not in plan.readout
    }
    chain: set[str] = set()
    for tensor in frontier:
        if any(c.name not in plan.readout for c in graph.consumers.get(tensor, [])):
            continue
        nodes: list[Node] = []
        node = graph.producer.get(tensor)
        while node is not None and node.op in ("Transpose", "Reshape") and len(graph.consumers[node.outputs[0]]) <= 1:
            nodes.append(node)
            node = graph.producer.get(node.inputs[0])
        if node is not None and node.op == "MatMul":  # softmax(scores) @ v, written out
            weights = graph.producer.get(node.inputs[0])
            if weights is None or weights.op != "Softmax" or len(graph.consumers[weights.outputs[0]]) != 1:
                continue
            nodes += [node, weights]
        elif node is None or node.op != "ScaledDotProductAttention":
            continue
        else:
            nodes.append(node)
        if all(n.op != "Reshape" or _keeps_token_axis(graph, n, plan.tokens) for n in nodes):
            chain.update(n.name for n in nodes)
    return frozenset(chain)


def _keeps_token_axis(graph: GraphView, node: Node, tokens: int) -> bool:
    """A reshape that names the token axis, or copies it (a 0 entry where its input has the tokens)."""
    entry = _token_entry(graph, node, tokens)
    if entry is not None:
        return entry != _AMBIGUOUS
    target = graph.values.get(node.inputs[1]) if len(node.inputs) > 1 else None
    source = graph.tensor(node.inputs[0]).shape or ()
    return target is not None and any(
        d == 0 and i < len(source) and source[i] == tokens for i, d in enumerate(target.reshape(-1).tolist())
    )


_AFFINE_OPS = frozenset({"MatMul", "Add", "Sub", "Mul", "Div"})


def _affine_projections(graph: GraphView, plan: TokenPlan) -> tuple[Node, ...]:
    """The per-token affine ops fed by LN1(X) alone (x @ W + b): their response to a scaled token g y is
    g f(y) + (1 - g) f(0), so the copies' rows are read from the original path's own output."""
    region = {plan.normed}
    chain: list[Node] = []
    for node in plan.tail.nodes:
        reads = [i for i in node.inputs if i in region]
        others = [i for i in node.inputs if i and i not in region]
        if (
            not reads
            or node.op not in _AFFINE_OPS
            or node.name in plan.norm_nodes
            or not _per_token(graph, node, plan)
            or len(reads) != 1
            or any(graph.kind.get(i) is not Kind.CONSTANT for i in others)
            or (node.op == "Div" and node.inputs[0] not in region)  # 1 / y is not affine
        ):
            continue
        chain.append(node)
        region.update(node.outputs)
    return tuple(chain)


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


def _short_refusal(graph: GraphView, plan: TokenPlan) -> str | None:
    """Why the short sequence cannot represent this tail exactly (None: it can)."""
    n = plan.grid[0] * plan.grid[1]
    if graph.tensor(plan.target).rank == 4:
        return "the tokens stay an h x w map (windowed attention, as in Swin): a token's window depends on its place"
    if n <= 9:
        return f"a {plan.grid[0]} x {plan.grid[1]} grid is smaller than the mask"
    for node in plan.tail.nodes:
        if _token_entry(graph, node, plan.tokens) == _AMBIGUOUS:
            target = graph.values[node.inputs[1]].tolist()
            return f"reshape '{node.name}' to {target} names the token count {plan.tokens} where its axis is unclear"
        if node.op == "Softmax":
            scores = graph.tensor(node.outputs[0]).shape or ()
            if tuple(scores[-2:]) != (plan.tokens, plan.tokens):
                return f"softmax '{node.name}' is not over the tokens"
        elif (
            node.op.startswith("Reduce")
            and node.axes is not None
            and 1 in node.axes
            and (node.op != "ReduceMean" or node.axes != (1,) or _pooled_length(graph, node) is None)
        ):
            return f"'{node.name}' ({node.op}) mixes tokens in a way the short sequence does not model"
    return None


# Ops that act on each token alone, given the checks in _per_token (weights on the feature axis only).
PER_TOKEN_OPS = PER_POSITION_OPS | {"MatMul", "LayerNormalization", "MeanVarianceNormalization", "ReduceMean"}


def _readout(graph: GraphView, plan: TokenPlan) -> tuple[frozenset[str], int]:
    """The per-token nodes feeding a head that reads only auxiliary tokens (CLS, distillation), and how many.

    A CLS head reads row 0 of the last tokens: everything after the last attention that acts token by
    token (out-projection, residual, MLP, final norm) needs only the first rows of each copy."""
    heads = [n for n in plan.tail.nodes if _reads_rows(graph, n, plan) is not None]
    if not heads or any(n.op == "ReduceMean" and n.axes == (1,) for n in plan.tail.nodes):
        return frozenset(), 0
    rows = max(_reads_rows(graph, n, plan) or 0 for n in heads) + 1
    region: dict[str, Node] = {}
    todo = [i for n in heads for i in n.inputs[:1]]
    while todo:
        node = graph.producer.get(todo.pop())
        if node is None or node.name in region or node.name in plan.norm_nodes or not _per_token(graph, node, plan):
            continue
        region[node.name] = node
        todo.extend(i for i in node.inputs if graph.kind.get(i) is Kind.ACTIVATION)
    allowed = {n.name for n in heads}
    while True:  # a node whose output is also read elsewhere must keep every row
        keep = {
            name
            for name, node in region.items()
            if any(
                c.name not in region and c.name not in allowed for o in node.outputs for c in graph.consumers.get(o, [])
            )
        }
        if not keep:
            return frozenset(region), rows
        for name in keep:
            del region[name]


def _reads_rows(graph: GraphView, node: Node, plan: TokenPlan) -> int | None:
    """The largest auxiliary row a Gather over the token axis reads (x[:, 0]), or None."""
    if node.op != "Gather" or len(node.inputs) < 2 or node.inputs[1] not in graph.values:
        return None
    source, out = graph.tensor(node.inputs[0]).shape, graph.tensor(node.outputs[0]).shape
    index = graph.values[node.inputs[1]]
    if source is None or out is None or len(source) != 3 or source[1] != plan.tokens or index.ndim != 0:
        return None
    if tuple(out) != (source[0], source[2]) or not 0 <= int(index) < plan.aux:
        return None
    return int(index)


def _per_token(graph: GraphView, node: Node, plan: TokenPlan) -> bool:
    """(B, T, D) in and out, each token on its own: constants that broadcast over the token axis only."""
    out = graph.tensor(node.outputs[0]).shape
    if node.op not in PER_TOKEN_OPS or out is None or len(out) != 3 or out[1] != plan.tokens:
        return False
    if node.op == "ReduceMean" and node.axes != (2,):
        return False
    if node.op == "MeanVarianceNormalization":
        axes = graph.values.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if axes is None or sorted(int(a) % 3 for a in axes.reshape(-1)) != [2]:
            return False
    for i, name in enumerate(node.inputs):
        if not name or graph.kind.get(name) is not Kind.CONSTANT:
            continue
        if node.op == "MeanVarianceNormalization" and i == 1:
            continue
        shape = graph.tensor(name).shape
        if shape is None or (len(shape) >= 2 and shape[-2] != 1 and not (node.op == "MatMul" and i == 1)):
            return False
        if node.op == "MatMul" and i == 0:
            return False
    return True


_AMBIGUOUS = -1


def _token_entry(graph: GraphView, node: Node, tokens: int) -> int | None:
    """Which entry of a reshape's constant target is the token axis (None: none; _AMBIGUOUS: cannot tell).

    Where the count appears more than once ([-1, 16, 3, 2, 16]: 16 tokens, head size 16), the token entry
    is the one whose preceding dimensions are the input's before its token axis (the same fixed product
    and the same number of free ones: the batch)."""
    if node.op != "Reshape" or len(node.inputs) < 2 or node.inputs[1] not in graph.values:
        return None
    target = [int(d) for d in graph.values[node.inputs[1]].reshape(-1).tolist()]
    hits = [i for i, d in enumerate(target) if d == tokens]
    if len(hits) <= 1:
        return hits[0] if hits else None
    source = graph.tensor(node.inputs[0]).shape or ()
    axes = [k for k, d in enumerate(source) if d == tokens]
    if len(axes) != 1:
        return _AMBIGUOUS

    def signature(dims: list[int | str | None]) -> tuple[int, int]:
        fixed = [d for d in dims if isinstance(d, int) and d > 0]
        return math.prod(fixed), len(dims) - len(fixed)

    copied = [source[i] if d == 0 and i < len(source) else (None if d == -1 else d) for i, d in enumerate(target)]
    wanted = signature(list(source[: axes[0]]))
    matches = [i for i in hits if signature(copied[:i]) == wanted]
    return matches[0] if len(matches) == 1 else _AMBIGUOUS


def _pooled_length(graph: GraphView, node: Node) -> int | None:
    shape = graph.tensor(node.inputs[0]).shape
    return shape[1] if shape is not None and len(shape) == 3 and isinstance(shape[1], int) else None


class ViTReciproCamHook(ReciproCamHook[T]):
    """The saliency branch of a transformer: the masked copies of one block's input, the rest copied."""

    def __init__(self, ops: Ops[T], graph: GraphView, plan: TokenPlan, options: HookOptions) -> None:
        self.ops, self.graph, self.plan, self.options = ops, graph, plan.tail, options
        self.tokens = plan
        self.shortcut, self.windows = None, None
        self.short = options.fast_path and plan.short is None
        h, w = plan.grid
        self.t = ops.tensor(plan.target)
        self.t_shape = ops.shape(self.t)
        self.batch = ops.slice(self.t_shape, 0, 1)
        self.h, self.w, self.n = ops.i64([h]), ops.i64([w]), ops.i64([h * w])
        self.mosaic_of: dict[str, T] = {}
        self._classes: T | None = None
        self.slots = _ONE_HOT if options.mask == "onehot" else _GAUSSIAN

    @property
    def length(self) -> int:
        """Tokens per copy: the short sequence's, or the model's own."""
        return self.tokens.aux + len(self.slots) + 1 if self.short else self.tokens.tokens

    def build(self) -> T:
        plan = self.tokens
        affine = {n.name for n in plan.affine} if self.short else set()
        if affine:
            self.mosaic_of.update(self._projected(plan.affine))
        for node in plan.tail.nodes:
            if node.name in plan.norm_nodes or node.name in affine:
                continue
            outs = self._copy(node) if self.short else None
            if outs is None and self.short and node.name in plan.readout:
                outs = self.ops.copy_node(node, [self._leading_rows(i) for i in node.inputs])
            if outs is None:
                outs = self.ops.copy_node(node, [self._input(i) for i in node.inputs])
            self.mosaic_of.update(zip(node.outputs, outs, strict=True))
        saliency = self._saliency(self.mosaic_of[self._logits()])
        self._expose(saliency, *plan.grid)
        return saliency

    # -- the copies of the block's input ----------------------------------------------------------

    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, L) token indices into X and their weights x 16: row n is copy n's sequence."""
        a, (h, w) = self.tokens.aux, self.tokens.grid
        index = np.zeros((h * w, self.length), np.int64)
        weight = np.zeros((h * w, self.length), np.int64)
        index[:, :a], weight[:, :a] = np.arange(a), 16
        for n in range(h * w):
            i, j = divmod(n, w)
            if not self.short:  # the whole grid, masked
                index[n, a:] = np.arange(a, a + h * w)
                for di, dj, g in self.slots:
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        weight[n, a + (i + di) * w + j + dj] = g
                continue
            for s, (di, dj, g) in enumerate(self.slots):  # the kept slots; the last token stays the zero token
                if 0 <= i + di < h and 0 <= j + dj < w:
                    index[n, a + s], weight[n, a + s] = a + (i + di) * w + j + dj, g
        return index, weight

    def _copies(self, name: str) -> T:
        """(B*N, L, D) -- or (B*N, h, w, D) for a token map -- every copy's tokens: ``name``'s tokens weighted by
        the mask, masked-out ones zero."""
        ops = self.ops
        x = ops.tensor(name)
        depth = ops.slice(ops.shape(x), -1, END)
        sequence = ops.reshape(x, ops.concat([self.batch, ops.i64([-1]), depth]))  # a token map as (B, h*w, D)
        gathered = self._gathered(sequence, ops.cast(ops.f32(0.0), ops.dtype(name)), name)
        per_copy = [self.length] if self.graph.tensor(name).rank == 3 else list(self.tokens.grid)
        return ops.reshape(gathered, ops.concat([ops.i64([-1, *per_copy]), depth]))

    def _gathered(self, x: T, zero: T, like: str) -> T:
        """(B, N*L, D): copy n's token l is g x[p] + (1 - g) zero, for its mask weight g at token p.

        One gather from a small bank (B, K*T + 1, D): x mixed with ``zero`` once per distinct weight g (1
        for one-hot; 1, 4/16, 2/16, 1/16 for the Gaussian), then ``zero`` itself for the masked-out tokens.
        The mixing runs on T rows; only the gather touches the N*L rows of the copies."""
        ops = self.ops
        index, weight = self._layout()
        weights = sorted({int(g) for g in weight.reshape(-1) if g}, reverse=True)
        background = ops.expand(zero, ops.concat([self.batch, ops.i64([1]), ops.slice(ops.shape(x), -1, END)]))
        bank = []
        for g in weights:
            share = ops.cast(ops.f32(g / 16), ops.dtype(like))
            bank.append(x if g == 16 else ops.binary("Add", zero, ops.binary("Mul", ops.binary("Sub", x, zero), share)))
        bank.append(background)
        start = {g: i * self.tokens.tokens for i, g in enumerate(weights)}
        rows = [
            start[int(g)] + int(p) if g else len(weights) * self.tokens.tokens
            for p, g in zip(index.flat, weight.flat, strict=True)
        ]
        return ops.gather(ops.concat(bank, axis=1), ops.i64(rows), 1)

    def _projected(self, chain: tuple[Node, ...]) -> dict[str, T]:
        """The copies of the affine projections' outputs read by the rest: g f(y) + (1 - g) f(0) per token,
        gathered from the original path's outputs (no projection runs on the copies)."""
        ops = self.ops
        inside = {n.name for n in chain}
        zeros = ops.expand(
            ops.cast(ops.f32(0.0), ops.dtype(self.tokens.normed)),
            ops.concat([ops.i64([1, 1]), ops.slice(ops.shape(ops.tensor(self.tokens.normed)), 2, 3)]),
        )
        at_zero: dict[str, T] = {self.tokens.normed: zeros}
        for node in chain:
            inputs = [at_zero[i] if i in at_zero else (ops.tensor(i) if i else None) for i in node.inputs]
            at_zero.update(zip(node.outputs, ops.copy_node(node, inputs), strict=True))
        read: dict[str, T] = {}
        for node in chain:
            for out in node.outputs:
                if all(c.name in inside for c in self.graph.consumers.get(out, [])) and out not in self.graph.outputs:
                    continue
                rows = self._gathered(ops.tensor(out), at_zero[out], out)
                depth = ops.slice(ops.shape(ops.tensor(out)), 2, 3)
                read[out] = ops.reshape(rows, ops.concat([ops.i64([-1, self.length]), depth]))
        return read

    def _input(self, name: str) -> T | None:
        """The copies of X and of LN1(X) are built when something reads them (the short sequence's affine
        projections and readout may read neither)."""
        if name in (self.tokens.target, self.tokens.normed) and name not in self.mosaic_of:
            self.mosaic_of[name] = self._copies(name)
        return super()._input(name)

    def _leading_rows(self, name: str) -> T | None:
        """A readout node's input: its first rows only, where it comes from outside the readout."""
        producer = self.graph.producer.get(name)
        done = self.tokens.readout | self.tokens.queries  # their outputs hold the leading rows already
        if self.graph.kind.get(name) is not Kind.ACTIVATION or (producer and producer.name in done):
            return self._input(name)
        key = f"{name}#rows"
        if key in self.mosaic_of:
            return self.mosaic_of[key]
        ops, leading = self.ops, self.ops.i64(list(range(self.tokens.rows)))
        if name == self.tokens.target and name not in self.mosaic_of:
            # X's leading rows are auxiliary tokens, unmasked in every copy: X[:, :rows] repeated N times.
            rows = ops.unsqueeze(ops.gather(ops.tensor(name), leading, 1), 1)  # (B, 1, rows, D)
            depth = ops.slice(ops.shape(rows), -1, END)
            tiled = ops.expand(rows, ops.concat([self.batch, self.n, ops.i64([self.tokens.rows]), depth]))
            self.mosaic_of[key] = ops.reshape(tiled, ops.concat([ops.i64([-1, self.tokens.rows]), depth]))
        else:
            x = self._input(name)
            assert x is not None
            self.mosaic_of[key] = ops.gather(x, leading, 1)
        return self.mosaic_of[key]

    # -- the short sequence's ops -----------------------------------------------------------------

    def _multiplicity(self) -> np.ndarray:
        n = self.tokens.grid[0] * self.tokens.grid[1]
        return np.array([1] * (self.tokens.aux + len(self.slots)) + [n - len(self.slots)], np.float64)

    def _copy(self, node: Node) -> list[T] | None:
        """A node whose copy differs on the short sequence; None: copied as it is."""
        if node.op == "Reshape":
            return self._reshape(node)
        if node.op == "Softmax":
            scores = self._queries(node, node.inputs[0])
            scores = self.ops.binary("Add", scores, self._log_counts(node.inputs[0]))
            return self.ops.copy_node(node, [scores, *(self._input(i) for i in node.inputs[1:])])
        if node.op == "ScaledDotProductAttention":
            return [self._attention(node)]
        if node.op == "ReduceMean" and node.axes == (1,):
            return [self._pooled(node)]
        return None

    def _queries(self, node: Node, name: str) -> T:
        """The copies of an attention's queries (or scores): only the readout's leading rows where that is all
        that is read of its output."""
        x = self._input(name)
        assert x is not None
        rank = self.graph.tensor(name).rank
        if node.name not in self.tokens.queries or rank is None:
            return x
        return self.ops.gather(x, self.ops.i64(list(range(self.tokens.rows))), rank - 2)

    def _log_counts(self, like: str) -> T:
        """(L,): 0 for every token but the zero token's log(N - S)."""
        ops = self.ops
        zero_token = ops.cast(ops.i64([0] * (self.length - 1) + [1]), "float32")
        return ops.cast(ops.binary("Mul", zero_token, ops.f32(math.log(self._multiplicity()[-1]))), ops.dtype(like))

    def _reshape(self, node: Node) -> list[T] | None:
        """A reshape whose target spells out the token count: the copy spells the short length."""
        entry = _token_entry(self.graph, node, self.tokens.tokens)
        if entry is None:
            return None
        ops = self.ops
        x = self._input(node.inputs[0])
        assert x is not None
        target = self.graph.values[node.inputs[1]].reshape(-1).tolist()
        length = self.tokens.rows if node.name in self.tokens.queries else self.length
        dims = [
            ops.slice(ops.shape(x), i, i + 1) if d == 0 else ops.i64([length if i == entry else int(d)])
            for i, d in enumerate(target)
        ]  # 0 copies the input's dimension in both formats' Reshape; Ops.reshape reads it literally
        return [ops.reshape(x, ops.concat(dims))]

    def _attention(self, node: Node) -> T:
        """softmax(q k^T scale + mask + log counts) v, written out (the fused op has no place for the counts)."""
        ops = self.ops
        q, k, v = self._queries(node, node.inputs[0]), self._input(node.inputs[1]), self._input(node.inputs[2])
        rank = self.graph.tensor(node.inputs[0]).rank
        depth = (self.graph.tensor(node.inputs[0]).shape or (None,))[-1]
        if rank is None or not isinstance(depth, int):
            raise OvxaiError(f"attention '{node.name}' has queries of unknown shape", "export with a fixed image size")
        perm = [*range(rank - 2), rank - 1, rank - 2]
        scale = self._input(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else ops.f32(depth**-0.5)
        scores = ops.binary("Mul", ops.matmul(q, ops.transpose(k, perm)), scale)  # type: ignore[arg-type]
        if len(node.inputs) > 3 and node.inputs[3]:
            scores = ops.binary("Add", scores, self._input(node.inputs[3]))  # type: ignore[arg-type]
        scores = ops.binary("Add", scores, self._log_counts(node.inputs[0]))
        return ops.matmul(ops.softmax(scores, -1), v)  # type: ignore[arg-type]

    def _pooled(self, node: Node) -> T:
        """Mean over tokens with the zero token counted N - S times: (w / count) @ x per copy."""
        ops = self.ops
        length = _pooled_length(self.graph, node)
        counts = self._multiplicity()
        if length == self.tokens.tokens - self.tokens.aux:
            counts = counts[self.tokens.aux :]
        weights = ops.binary("Div", ops.cast(ops.i64([int(c) for c in counts]), "float32"), ops.f32(float(length or 1)))
        row = ops.reshape(ops.cast(weights, ops.dtype(node.inputs[0])), ops.i64([1, 1, -1]))
        pooled = ops.matmul(row, self._input(node.inputs[0]))  # type: ignore[arg-type]  # (B*N, 1, D)
        if node.keepdims:
            return pooled
        return ops.reshape(pooled, ops.concat([ops.i64([-1]), ops.slice(ops.shape(pooled), 2, 3)]))


def hook_macs(graph: GraphView, plan: TokenPlan, mask: str = "onehot", fast_path: bool = True) -> int:
    """MACs per image the hook adds: N copies of the tail, each on its own token count.

    General path: every copy runs the whole tail on A + N tokens. Short sequence: per-token work scales
    to A + S + 1 tokens, the readout to its leading rows, and the affine projections cost nothing (read
    from the original path); the attention's own products are small beside the projections and are left out."""
    from ovxai.graph.macs import node_macs

    n = plan.grid[0] * plan.grid[1]
    slots = len(_ONE_HOT if mask == "onehot" else _GAUSSIAN)
    short = fast_path and plan.short is None
    length = plan.aux + slots + 1 if short else plan.tokens
    skipped = plan.norm_nodes | ({node.name for node in plan.affine} if short else set())
    total = 0.0
    for node in plan.tail.nodes:
        if node.name in skipped:
            continue
        cost: float = node_macs(graph, node)
        shape = graph.tensor(node.outputs[0]).shape if node.outputs else None
        if cost and shape is not None and len(shape) == 3 and shape[1] == plan.tokens:
            cost *= (plan.rows if short and node.name in plan.readout else length) / plan.tokens
        total += cost
    return int(n * total)
