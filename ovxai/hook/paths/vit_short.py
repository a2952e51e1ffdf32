"""The exact short sequence: ViT-ReciproCAM's copies on A + S + 1 tokens instead of A + N.

Inside copy n every masked-out token is the zero token (0 in both X and LN1(X)): identical, so every query
sees identical keys and values for them, and identical tokens stay identical through every later layer
(attention is permutation-equivariant; the position embedding was added before the blocks). A copy is
therefore exactly represented by

    [A auxiliary tokens] + [S kept slots (1 one-hot, 9 Gaussian)] + [one zero token]

with multiplicities 1 ... 1, N - S: each attention adds log(multiplicity) to the logits of its keys
(exp(s + log c) = c exp(s): the zero token counted N - S times) and a mean over tokens weighs it by its
multiplicity. A Gaussian slot outside the grid is itself a zero token, counted once. Two more exact savings:
the q, k, v projections are affine per token, so the copies' rows are gathered from the original path's
outputs (``affine``); and a head that reads only the CLS / distillation rows needs only those rows after the
last attention (``queries``, ``readout``). Reshapes that spell the token count get the short length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from ovxai.conventions import HookPath, Mask
from ovxai.errors import OvxaiError
from ovxai.graph.macs import node_macs
from ovxai.graph.ops import END
from ovxai.graph.view import GraphView, Kind, Node
from ovxai.hook.masks import TAPS
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import Copies, Declined, TokenSite
from ovxai.hook.static_value import static_value, uniform
from ovxai.hook.tail import PER_POSITION_OPS
from ovxai.hook.tokens import TokenPlan

T = TypeVar("T")


@dataclass(frozen=True)
class ShortPlan:
    """What the short sequence computes less of."""

    readout: frozenset[str] = frozenset()  # per-token nodes whose only use is the head's auxiliary rows
    rows: int = 0  # how many leading rows the head reads from them
    affine: tuple[Node, ...] = ()  # per-token affine ops reading LN1(X) (the q, k, v projections)
    queries: frozenset[str] = frozenset()  # the last attention and the layout ops from it to the readout: its rows only
    terms: tuple[tuple[str, float | bool], ...] = ()  # masks added to attention scores, the same for every token pair


class TokensPath:
    name: HookPath = "tokens"

    def plan(self, graph: GraphView, tokens: TokenPlan, options: HookOptions) -> ShortPlan | Declined:
        refusal = _short_refusal(graph, tokens)
        if refusal is not None:
            return Declined(refusal)
        terms = _token_terms(graph, tokens)
        if isinstance(terms, Declined):
            return terms
        readout, rows = _readout(graph, tokens)
        queries = _readout_queries(graph, tokens, readout)
        return ShortPlan(readout, rows, _affine_projections(graph, tokens), queries, tuple(terms.items()))

    def replaced(self, plan: ShortPlan) -> frozenset[str]:
        return frozenset(n.name for n in plan.affine)

    def macs(self, graph: GraphView, tokens: TokenPlan, plan: ShortPlan, mask: Mask) -> int:
        """Per-token work scales to A + S + 1 tokens, the readout to its leading rows, and the affine projections
        cost nothing (read from the original path); the attention's own products are small beside the
        projections and are left out."""
        length = tokens.aux + len(TAPS[mask]) + 1
        skipped = tokens.norm_nodes | self.replaced(plan)
        total = 0.0
        for node in tokens.tail.nodes:
            if node.name in skipped:
                continue
            cost: float = node_macs(graph, node)
            shape = graph.tensor(node.outputs[0]).shape if node.outputs else None
            if cost and shape is not None and len(shape) == 3 and shape[1] == tokens.tokens:
                cost *= (plan.rows if node.name in plan.readout else length) / tokens.tokens
            total += cost
        return int(tokens.grid[0] * tokens.grid[1] * total)

    def emit(self, hook: TokenSite[T], plan: ShortPlan) -> Copies[T]:
        short = ShortSequence(hook, plan)
        values = short.projected() if plan.affine else {}
        replaced = self.replaced(plan) | hook.tokens.norm_nodes  # LN1's copies are read masked
        return Copies(values, replaced, lazy=hook.block_inputs(), special=short.copy)


TOKENS = TokensPath()


class ShortSequence(Generic[T]):
    """The nodes whose copy differs on the short sequence: attention, token means, reshapes, the readout."""

    def __init__(self, hook: TokenSite[T], plan: ShortPlan) -> None:
        self.hook, self.plan, self.ops, self.tokens = hook, plan, hook.ops, hook.tokens

    def copy(self, node: Node) -> list[T] | None:
        """The copy of ``node`` on the short sequence; None: copied as it is."""
        terms = dict(self.plan.terms)
        if node.op != "ScaledDotProductAttention" and any(i in terms for i in node.inputs):
            inputs = [self._term(i) if i in terms else self.hook.input(i) for i in node.inputs]
            return self.ops.copy_node(node, inputs)
        if node.op == "Reshape":
            return self._reshape(node)
        if node.op == "Softmax":
            scores = self.ops.binary("Add", self._queries(node, node.inputs[0]), self._log_counts(node.inputs[0]))
            return self.ops.copy_node(node, [scores, *(self.hook.input(i) for i in node.inputs[1:])])
        if node.op == "ScaledDotProductAttention":
            return [self._attention(node)]
        if node.op == "ReduceMean" and node.axes == (1,):
            return [self._pooled(node)]
        if node.name in self.plan.readout:
            return self.ops.copy_node(node, [self._leading_rows(i) for i in node.inputs])
        return None

    def _term(self, name: str) -> T:
        """A mask that treats every token pair alike, as the one value it holds (it broadcasts to any length)."""
        value = dict(self.plan.terms)[name]
        return self.ops.builder.constant(np.array(value, dtype=self.ops.dtype(name)))

    def projected(self) -> dict[str, T]:
        """The copies of the affine projections' outputs read by the rest: g f(y) + (1 - g) f(0) per token,
        gathered from the original path's outputs (no projection runs on the copies)."""
        ops = self.ops
        chain = self.plan.affine
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
                graph = self.hook.graph
                if all(c.name in inside for c in graph.consumers.get(out, [])) and out not in graph.outputs:
                    continue
                rows = self.hook.gathered(ops.tensor(out), at_zero[out], out)
                depth = ops.slice(ops.shape(ops.tensor(out)), 2, 3)
                read[out] = ops.reshape(rows, ops.concat([ops.i64([-1, self.hook.length]), depth]))
        return read

    def _leading_rows(self, name: str) -> T | None:
        """A readout node's input: its first rows only, where it comes from outside the readout."""
        producer = self.hook.graph.producer.get(name)
        done = self.plan.readout | self.plan.queries  # their outputs hold the leading rows already
        if self.hook.graph.kind.get(name) is not Kind.ACTIVATION or (producer and producer.name in done):
            return self.hook.input(name)
        key = f"{name}#rows"
        if key in self.hook.values:
            return self.hook.values[key]
        ops, leading = self.ops, self.ops.i64(list(range(self.plan.rows)))
        if name == self.tokens.target and name not in self.hook.values:
            # X's leading rows are auxiliary tokens, unmasked in every copy: X[:, :rows] repeated N times.
            rows = ops.unsqueeze(ops.gather(ops.tensor(name), leading, 1), 1)  # (B, 1, rows, D)
            depth = ops.slice(ops.shape(rows), -1, END)
            tiled = ops.expand(rows, ops.concat([self.hook.batch, self.hook.n, ops.i64([self.plan.rows]), depth]))
            self.hook.values[key] = ops.reshape(tiled, ops.concat([ops.i64([-1, self.plan.rows]), depth]))
        else:
            x = self.hook.input(name)
            assert x is not None
            self.hook.values[key] = ops.gather(x, leading, 1)
        return self.hook.values[key]

    def _multiplicity(self) -> np.ndarray:
        n = self.tokens.grid[0] * self.tokens.grid[1]
        return np.array([1] * (self.tokens.aux + len(self.hook.slots)) + [n - len(self.hook.slots)], np.float64)

    def _queries(self, node: Node, name: str) -> T:
        """The copies of an attention's queries (or scores): only the readout's leading rows where that is all
        that is read of its output."""
        x = self.hook.input(name)
        assert x is not None
        rank = self.hook.graph.tensor(name).rank
        if node.name not in self.plan.queries or rank is None:
            return x
        return self.ops.gather(x, self.ops.i64(list(range(self.plan.rows))), rank - 2)

    def _log_counts(self, like: str) -> T:
        """(L,): 0 for every token but the zero token's log(N - S)."""
        ops = self.ops
        zero_token = ops.cast(ops.i64([0] * (self.hook.length - 1) + [1]), "float32")
        return ops.cast(ops.binary("Mul", zero_token, ops.f32(math.log(self._multiplicity()[-1]))), ops.dtype(like))

    def _reshape(self, node: Node) -> list[T] | None:
        """A reshape whose target spells out the token count: the copy spells the short length."""
        entry = _token_entry(self.hook.graph, node, self.tokens.tokens)
        if entry is None:
            return None
        ops = self.ops
        x = self.hook.input(node.inputs[0])
        assert x is not None
        target = self.hook.graph.values[node.inputs[1]].reshape(-1).tolist()
        length = self.plan.rows if node.name in self.plan.queries else self.hook.length
        dims = [
            ops.slice(ops.shape(x), i, i + 1) if d == 0 else ops.i64([length if i == entry else int(d)])
            for i, d in enumerate(target)
        ]  # 0 copies the input's dimension in both formats' Reshape; Ops.reshape reads it literally
        return [ops.reshape(x, ops.concat(dims))]

    def _attention(self, node: Node) -> T:
        """softmax(q k^T scale + mask + log counts) v, written out (the fused op has no place for the counts)."""
        ops = self.ops
        q, k, v = self._queries(node, node.inputs[0]), self.hook.input(node.inputs[1]), self.hook.input(node.inputs[2])
        rank = self.hook.graph.tensor(node.inputs[0]).rank
        depth = (self.hook.graph.tensor(node.inputs[0]).shape or (None,))[-1]
        if rank is None or not isinstance(depth, int):
            raise OvxaiError(f"attention '{node.name}' has queries of unknown shape", "export with a fixed image size")
        perm = [*range(rank - 2), rank - 1, rank - 2]
        scale = self.hook.input(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else ops.f32(depth**-0.5)
        scores = ops.binary("Mul", ops.matmul(q, ops.transpose(k, perm)), scale)  # type: ignore[arg-type]
        mask = node.inputs[3] if len(node.inputs) > 3 else ""
        if mask and dict(self.plan.terms).get(mask) is not True:  # an all-True boolean mask masks nothing
            term = self._term(mask) if mask in dict(self.plan.terms) else self.hook.input(mask)
            scores = ops.binary("Add", scores, term)  # type: ignore[arg-type]
        scores = ops.binary("Add", scores, self._log_counts(node.inputs[0]))
        return ops.matmul(ops.softmax(scores, -1), v)  # type: ignore[arg-type]

    def _pooled(self, node: Node) -> T:
        """Mean over tokens with the zero token counted N - S times: (w / count) @ x per copy."""
        ops = self.ops
        length = _pooled_length(self.hook.graph, node)
        counts = self._multiplicity()
        if length == self.tokens.tokens - self.tokens.aux:
            counts = counts[self.tokens.aux :]
        weights = ops.binary("Div", ops.cast(ops.i64([int(c) for c in counts]), "float32"), ops.f32(float(length or 1)))
        row = ops.reshape(ops.cast(weights, ops.dtype(node.inputs[0])), ops.i64([1, 1, -1]))
        pooled = ops.matmul(row, self.hook.input(node.inputs[0]))  # type: ignore[arg-type]  # (B*N, 1, D)
        if node.keepdims:
            return pooled
        return ops.reshape(pooled, ops.concat([ops.i64([-1]), ops.slice(ops.shape(pooled), 2, 3)]))


def _readout_queries(graph: GraphView, plan: TokenPlan, readout: frozenset[str]) -> frozenset[str]:
    """The attention whose output reaches the readout only through layout ops (its heads transposed and
    merged back), with those ops: only its first ``rows`` queries are ever read, so only they are computed."""
    frontier = {
        i
        for n in plan.tail.nodes
        if n.name in readout
        for i in n.inputs
        if graph.kind.get(i) is Kind.ACTIVATION and graph.producer.get(i, n).name not in readout
    }
    chain: set[str] = set()
    for tensor in frontier:
        if any(c.name not in readout for c in graph.consumers.get(tensor, [])):
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


def _short_refusal(graph: GraphView, plan: TokenPlan) -> str | None:
    """Why the short sequence cannot represent this tail exactly (None: it can)."""
    n = plan.grid[0] * plan.grid[1]
    if graph.tensor(plan.target).rank == 4:
        return "the tokens stay an h x w map (windowed attention, as in Swin): a token's window depends on its place"
    if n <= 9:
        return f"a {plan.grid[0]} x {plan.grid[1]} grid is smaller than the mask"
    for node in plan.tail.nodes:
        laid_out = _lays_out_tokens(graph, node, plan)
        if laid_out is not None:
            return laid_out
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


def _lays_out_tokens(graph: GraphView, node: Node, plan: TokenPlan) -> str | None:
    """Why a reshape that folds the token axis away (into an h x w map, windows, or the features of a flattening
    head) makes a token's place matter, or None."""
    if node.op not in ("Reshape", "Flatten"):
        return None
    source, out = graph.tensor(node.inputs[0]).shape, graph.tensor(node.outputs[0]).shape
    if source is None or len(source) != 3 or source[1] != plan.tokens or out is None or plan.tokens in out[1:]:
        return None
    if len(out) == 2 and out[1] == source[2]:
        return None  # the tokens merged into the batch, features kept (a BatchNorm1d over tokens): still per token
    return (
        f"'{node.name}' lays the {plan.tokens} tokens out as {graph.tensor(node.outputs[0]).describe()} "
        "(a map, windows, or a flattening head): a token's place matters"
    )


def _token_terms(graph: GraphView, plan: TokenPlan) -> dict[str, float | bool] | Declined:
    """Masks and biases added to attention scores from outside the copies (transformers' attention mask, BEiT's or
    LeViT's position bias), each as the one value it holds where it treats every token pair alike; Declined
    where one depends on the pair: the short sequence's tokens have no fixed place."""
    copied = graph.descendants(plan.target)
    terms: dict[str, float | bool] = {}
    for node in plan.tail.nodes:
        if node.op == "ScaledDotProductAttention":
            found = [(node, node.inputs[3])] if len(node.inputs) > 3 and node.inputs[3] else []
        elif node.op == "Softmax":
            found = _score_terms(graph, node, copied)
        else:
            continue
        for reader, term in found:
            shape = graph.tensor(term).shape
            if shape is not None and all(d == 1 for d in shape[-2:]):
                continue  # one value per head or image: it broadcasts to any length
            value = static_value(graph, term)
            if value is None or not uniform(value):
                what = (
                    "depends on the token pair" if value is not None else "is not shown to treat every token pair alike"
                )
                return Declined(
                    f"'{reader.name}' adds a position bias or mask of shape {graph.tensor(term).describe()} "
                    f"that {what}: the short sequence's tokens have no fixed place"
                )
            single = value.reshape(-1)[0]
            if value.dtype == np.bool_ and not single:
                return Declined(f"the mask '{term}' masks every token")
            terms[term] = bool(single) if value.dtype == np.bool_ else float(single)
    return terms


def _score_terms(graph: GraphView, softmax: Node, copied: set[str]) -> list[tuple[Node, str]]:
    """The tensors from outside the copies that the steps between q k^T and ``softmax`` read (a scale is a
    constant of one value, a bias or mask has the scores' trailing shape)."""
    found: list[tuple[Node, str]] = []
    todo = [softmax.inputs[0]]
    while todo:
        node = graph.producer.get(todo.pop())
        if node is None or node.name not in copied or node.op not in ("Add", "Sub", "Mul", "Div", "Where", "Cast"):
            continue
        for i in node.inputs:
            producer = graph.producer.get(i)
            if producer is not None and producer.name in copied:
                todo.append(i)
            elif i:
                found.append((node, i))
    return found


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
