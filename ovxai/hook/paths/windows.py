"""Incremental inference through a spatial tail: each masked copy is computed only where it differs.

Recipro-CAM's copy n of the target map T is T times mask n: zero outside the mask's footprint (one
position for the one-hot mask, 3 x 3 for the Gaussian). Call the tail's response to an all-zero map
its *background*: one map per tail tensor, the same for every copy and every image. A convolution's
output at o reads the inputs o * stride - pad + t * dilation, so copy n differs from the background
only inside a box (its *dirty* box) that grows by the kernel's reach at every convolution and keeps
its place through per-position ops (BatchNorm, activations, residual Adds of two such tensors).
Computing each copy only inside that box is exact; this is Krypton's incremental inference
(Nakandala et al., SIGMOD 2019) applied to Recipro-CAM's masks.

Every tail tensor gets one fixed window size (the largest dirty box over the copies) and, per copy,
a window placed over its dirty box inside the map: the copies are (B*N, C, h, w) instead of the
mosaic's (B*N, C, H, W). A convolution reads, per copy, the patch its window needs, gathered from a
bank [the input's windows of all copies | the input's background | a zero for the padding]; its copy
then runs unpadded on those patches. A global average pool ends the windows: copy n's mean is
(sum of its window + sum of the background outside it) / (H W). ResNet-50 at ``layer3`` (14 x 14 ->
layer4's 7 x 7): windows of 1, 2 x 2, 4 x 4, 6 x 6 positions, about 11x the network by FLOPs against
about 39x for the mosaic.

The geometry (boxes, windows, gather indices) depends only on static shapes and is computed here, at
export time; the graph holds the indices (N x patch size int64 each) and no per-copy float data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from ovxai.conventions import HookPath, Mask
from ovxai.graph.macs import macs, node_macs
from ovxai.graph.view import QUANTIZERS, SHAPE_OPS, GraphView, Node, Sliding
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import Copies, Declined, Site
from ovxai.hook.tail import TailPlan, acts_per_position, global_pool_keepdims, is_constant

T = TypeVar("T")
CHEAPER = 0.75  # windows are taken when their MACs are at most this share of the mosaic's (gathers cost too)
POINT = Sliding((1, 1), (1, 1), (0, 0), (1, 1))  # a per-position op: window in = window out


@dataclass(frozen=True)
class Window:
    """Where a tail tensor's copies are computed: per copy, a ``size`` window at ``starts`` (N, 2) inside the
    ``full`` (H, W) map, covering the copy's dirty box [lo, hi) (N, 2) each; an empty box has hi <= lo."""

    full: tuple[int, int]
    size: tuple[int, int]
    starts: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def area(self) -> int:
        return self.size[0] * self.size[1]

    def same_place(self, other: Window) -> bool:
        return self.size == other.size and bool(np.array_equal(self.starts, other.starts))


def covering(lo: np.ndarray, hi: np.ndarray, full: tuple[int, int]) -> Window:
    """The smallest fixed-size windows that hold every copy's dirty box [lo, hi) inside the map."""
    extent = np.maximum(hi - lo, 0)
    size = tuple(int(max(1, extent[:, a].max())) for a in (0, 1))
    starts = np.minimum(np.clip(lo, 0, None), np.array(full) - np.array(size))
    return Window(full, (size[0], size[1]), starts, lo, hi)


def slid(window: Window, sliding: Sliding, full: tuple[int, int]) -> Window:
    """The output window of a convolution reading ``window``: outputs o whose taps reach the dirty box."""
    k, s, p, d = (np.array(v) for v in (sliding.kernel, sliding.strides, sliding.pads, sliding.dilations))
    lo = -(-(window.lo + p - (k - 1) * d) // s)  # ceil: the first output whose last tap reaches lo
    hi = (window.hi - 1 + p) // s + 1  # past the last output whose first tap reaches hi - 1
    lo, hi = np.clip(lo, 0, np.array(full)), np.clip(hi, 0, np.array(full))
    empty = (window.hi <= window.lo).any(axis=1, keepdims=True)
    return covering(lo, np.where(empty, lo, hi), full)


def united(windows: list[Window]) -> Window:
    """The window of a per-position op reading several windowed tensors: the union of their dirty boxes."""
    lo, hi = windows[0].lo, windows[0].hi
    for other in windows[1:]:
        mine, theirs = (hi <= lo).any(1, keepdims=True), (other.hi <= other.lo).any(1, keepdims=True)
        lo, hi = (
            np.where(mine, other.lo, np.where(theirs, lo, np.minimum(lo, other.lo))),
            np.where(mine, other.hi, np.where(theirs, hi, np.maximum(hi, other.hi))),
        )
    return covering(lo, hi, windows[0].full)


def map_positions(window: Window) -> np.ndarray:
    """(N, h * w): the flat map positions r * W + c of each copy's window."""
    (h, w), width = window.size, window.full[1]
    rows = window.starts[:, 0, None, None] + np.arange(h)[:, None]
    cols = window.starts[:, 1, None, None] + np.arange(w)
    return (rows * width + cols).reshape(len(window.starts), -1)


def patch_index(source: Window, out: Window, sliding: Sliding) -> np.ndarray:
    """(N, ph, pw) positions in the bank [N windows of ``source`` | its background (H*W) | a zero] of the
    patch each copy's ``out`` window reads through ``sliding`` (padding included: the zero)."""
    k, s, p, d = sliding.kernel, sliding.strides, sliding.pads, sliding.dilations
    ph, pw = ((out.size[a] - 1) * s[a] + (k[a] - 1) * d[a] + 1 for a in (0, 1))
    n = len(out.starts)
    rows = (out.starts[:, 0:1] * s[0] - p[0] + np.arange(ph))[:, :, None]  # (N, ph, 1)
    cols = (out.starts[:, 1:2] * s[1] - p[1] + np.arange(pw))[:, None, :]  # (N, 1, pw)
    (height, width), (h, w) = source.full, source.size
    top, left = source.starts[:, 0, None, None], source.starts[:, 1, None, None]
    in_window = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    in_map = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    windows = n * h * w
    own = np.arange(n)[:, None, None] * h * w + (rows - top) * w + (cols - left)
    return np.where(in_window, own, np.where(in_map, windows + rows * width + cols, windows + height * width))


@dataclass(frozen=True)
class Windows:
    """The incremental path for a tail: ``nodes`` (convolutions and per-position ops) run on windows up to the
    global average ``pool``; ``geometry`` holds every windowed tensor's :class:`Window` (the target's too)."""

    target: str
    nodes: tuple[Node, ...]
    pool: Node
    keepdims: bool
    geometry: dict[str, Window]

    @property
    def replaced(self) -> set[str]:
        return {n.name for n in self.nodes} | {self.pool.name}

    @property
    def output(self) -> str:
        return self.pool.outputs[0]

    def macs(self, graph: GraphView, tail: list[Node]) -> int:
        """Per image: each convolution on its windows for the N copies, then the rest of ``tail`` N times."""
        n = len(self.geometry[self.target].starts)
        total = n * macs(graph, [node for node in tail if node.name not in self.replaced])
        for node in self.nodes:
            window = self.geometry[node.outputs[0]]
            total += node_macs(graph, node) * n * window.area // (window.full[0] * window.full[1])
        return total


class WindowsPath:
    name: HookPath = "windows"

    def plan(self, graph: GraphView, tail: TailPlan, options: HookOptions) -> Windows | Declined:
        """Convolutions and per-position ops up to a global average pool, static shapes, and at most ``CHEAPER``
        of the mosaic's MACs."""
        shape = graph.tensor(tail.target).shape
        if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            return Declined("the map's size is not fixed (pin it with --input-shape)")
        region = {tail.target}
        nodes: list[Node] = []
        pool: Node | None = None
        pool_keepdims = True
        for node in tail.nodes:
            if node.op in SHAPE_OPS or not any(i in region for i in node.inputs):
                continue
            if pool is not None:
                return Declined(f"'{node.name}' ({node.op}) reads the copies past the global pool")
            keepdims = global_pool_keepdims(graph, node)
            if keepdims is not None and node.inputs[0] in region:
                pool, pool_keepdims = node, keepdims
                continue
            if node.op in QUANTIZERS:  # the engines re-plan quantised convolutions around the gathers
                return Declined(f"'{node.name}' quantises the copies (OpenVINO's LPT cannot compile gathered INT8)")
            out = graph.tensor(node.outputs[0]).shape
            if out is None or len(out) != 4 or not all(isinstance(d, int) for d in out[1:]):
                return Declined(f"'{node.name}' ({node.op}) gives a map of unknown size")
            if not (_slides(graph, node, region) or acts_per_position(graph, node, region)):
                return Declined(f"'{node.name}' ({node.op}) is neither a 2-D convolution nor a per-position op")
            nodes.append(node)
            region.update(node.outputs)
        if pool is None:
            return Declined("no global average pool ends the spatial part")
        feeding = graph.ancestors([pool.inputs[0]])
        if any(n.name not in feeding for n in nodes):
            return Declined("a windowed tensor leaves the tail another way than through the pool")
        geometry = _geometry(graph, tail.target, nodes, options.mask)
        windows = Windows(tail.target, tuple(nodes), pool, pool_keepdims, geometry)
        n = len(windows.geometry[tail.target].starts)
        cost, mosaic = windows.macs(graph, tail.nodes), n * macs(graph, tail.nodes)
        if cost > CHEAPER * mosaic:
            return Declined(f"the windows cost {cost / max(mosaic, 1):.2f} of the mosaic's MACs (over {CHEAPER})")
        return windows

    def replaced(self, plan: Windows) -> frozenset[str]:
        return frozenset(plan.replaced)

    def macs(self, graph: GraphView, tail: TailPlan, plan: Windows, mask: Mask) -> int:
        return plan.macs(graph, tail.nodes)

    def emit(self, hook: Site[T], plan: Windows) -> Copies[T]:
        return Copies({plan.output: WindowedCopies(hook, plan).pooled()}, frozenset(plan.replaced), pool=plan.pool)


WINDOWS = WindowsPath()


def _slides(graph: GraphView, node: Node, region: set[str]) -> bool:
    """A 2-D convolution of a windowed tensor by constant weights."""
    return node.sliding is not None and node.inputs[0] in region and all(is_constant(graph, i) for i in node.inputs[1:])


def static_chw(graph: GraphView, name: str) -> tuple[int, int, int]:
    """C, H, W of a map that plan_windows required static."""
    c, h, w = (graph.tensor(name).shape or (None,) * 4)[1:]
    assert isinstance(c, int) and isinstance(h, int) and isinstance(w, int)
    return c, h, w


def _geometry(graph: GraphView, target: str, nodes: list[Node], mask: str) -> dict[str, Window]:
    _, height, width = static_chw(graph, target)
    rows, cols = np.divmod(np.arange(height * width), width)
    reach = 0 if mask == "onehot" else 1  # the mask's footprint around its centre
    centre = np.stack([rows, cols], axis=1)
    full = (height, width)
    lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, np.array(full))
    geometry = {target: covering(lo, hi, full)}
    for node in nodes:
        out_full = static_chw(graph, node.outputs[0])[1:]
        if node.sliding is not None and not node.pointwise:
            window = slid(geometry[node.inputs[0]], node.sliding, out_full)
        else:
            window = united([geometry[i] for i in node.inputs if i in geometry])
        for out in node.outputs:
            geometry[out] = window
    return geometry


class WindowedCopies(Generic[T]):
    """Emits the incremental path through the hook's :class:`~ovxai.graph.ops.Ops`: the pool's output for all B*N
    copies, (B*N, C, 1, 1) (or (B*N, C) without keepdims), from windows instead of the mosaic."""

    def __init__(self, hook: Site[T], windows: Windows) -> None:
        self.hook, self.ops, self.windows = hook, hook.ops, windows
        self.geometry = windows.geometry
        self.n = len(windows.geometry[windows.target].starts)

    def pooled(self) -> T:
        ops, windows = self.ops, self.windows
        zeros = ops.expand(ops.cast(ops.f32(0.0), ops.dtype(windows.target)), ops.i64([1, *self._chw(windows.target)]))
        background = self.hook.copied(windows.nodes, {windows.target: zeros})  # one image, image-independent
        values = {windows.target: self._target()}
        for node in windows.nodes:
            out = self.geometry[node.outputs[0]]
            if node.sliding is not None and not node.pointwise:
                source = node.inputs[0]
                rest = [ops.tensor(i) if i else None for i in node.inputs[1:]]
                if self.geometry[source].size == self.geometry[source].full and out.size == out.full:
                    copies = ops.copy_node(node, [values[source], *rest])  # whole maps: as in the mosaic
                else:
                    patches = self._patches(values[source], background[source], source, out, node.sliding)
                    copies = ops.copy_node(node, [patches, *rest], unpadded=True)
            else:
                inputs = [
                    self._placed(i, values, background, out) if i in values else (ops.tensor(i) if i else None)
                    for i in node.inputs
                ]
                copies = ops.copy_node(node, inputs)
            values.update(zip(node.outputs, copies, strict=True))
        source = windows.pool.inputs[0]
        return self._pool(values[source], background[source], source)

    def _chw(self, name: str) -> tuple[int, int, int]:
        return static_chw(self.hook.graph, name)

    def _target(self) -> T:
        """The copies of T on their windows: T's column n (one-hot), or the Gaussian's 3 x 3 around n."""
        ops, hook = self.ops, self.hook
        c, h, w = self._chw(self.windows.target)
        window = self.geometry[self.windows.target]
        if window.area == 1:
            rows = ops.transpose(ops.reshape(hook.t, ops.i64([-1, c, self.n])), [0, 2, 1])
            return ops.reshape(rows, ops.i64([-1, c, 1, 1]))
        index = map_positions(window)
        gathered = ops.gather(self._rows(hook.t, c, h * w), ops.i64(index.reshape(-1)), 1)  # (B, N h w, C)
        weights = ops.gather_elements(hook.masks, ops.i64(index), 1)  # (N, h w): mask n on its window
        per_copy = ops.reshape(gathered, ops.i64([-1, self.n, window.area, c]))
        placed = ops.binary("Mul", per_copy, ops.reshape(weights, ops.i64([1, self.n, window.area, 1])))
        return self._unbanked(placed, c, window.size)

    def _placed(self, name: str, values: dict[str, T], background: dict[str, T], out: Window) -> T:
        """``name``'s copies on the ``out`` windows (a per-position op's operands must line up)."""
        if self.geometry[name].same_place(out):
            return values[name]
        return self._patches(values[name], background[name], name, out, POINT)

    def _patches(self, copies: T, background: T, name: str, out: Window, sliding: Sliding) -> T:
        """(B*N, C, ph, pw): the inputs each copy's ``out`` window reads, gathered from the bank
        [the copies' windows | the background | a zero], as rows of C channels: the engines' convolutions
        work channels-last, so the transposes around the gather mostly become their own reorders."""
        ops = self.ops
        c, h, w = self._chw(name)
        window = self.geometry[name]
        rows = self._rows(copies, c, self.n * window.area)
        zero = ops.expand(ops.cast(ops.f32(0.0), ops.dtype(name)), ops.i64([1, 1, c]))
        fixed = ops.concat([self._rows(background, c, h * w), zero], axis=1)  # (1, H W + 1, C)
        batch = ops.slice(ops.shape(rows), 0, 1)
        bank = ops.concat([rows, ops.expand(fixed, ops.concat([batch, ops.i64([h * w + 1, c])]))], axis=1)
        index = patch_index(window, out, sliding)
        return self._unbanked(ops.gather(bank, ops.i64(index.reshape(-1)), 1), c, index.shape[1:])

    def _rows(self, maps: T, channels: int, count: int) -> T:
        """(B', C, h, w) maps -> (B, count, C) rows, channels last."""
        ops = self.ops
        return ops.reshape(ops.transpose(maps, [0, 2, 3, 1]), ops.i64([-1, count, channels]))

    def _unbanked(self, rows: T, channels: int, size: tuple[int, ...]) -> T:
        """(B, N * ph * pw, C) rows -> (B*N, C, ph, pw) maps."""
        ops = self.ops
        return ops.transpose(ops.reshape(rows, ops.i64([-1, *size, channels])), [0, 3, 1, 2])

    def _pool(self, copies: T, background: T, name: str) -> T:
        """Copy n's global mean: (sum over its window + sum of the background outside it) / (H W)."""
        ops = self.ops
        c, h, w = self._chw(name)
        window = self.geometry[name]
        sums = ops.reduce("ReduceSum", ops.reshape(copies, ops.i64([-1, self.n, c, window.area])), 3)
        index = map_positions(window)
        outside = np.ones((h * w, self.n), dtype=np.float32)
        outside[index, np.arange(self.n)[:, None]] = 0.0
        dtype = ops.dtype(name)
        rest = ops.matmul(ops.reshape(background, ops.i64([c, h * w])), ops.cast(ops.f32(outside), dtype))  # (C, N)
        total = ops.binary("Add", ops.reshape(sums, ops.i64([-1, self.n, c])), ops.transpose(rest, [1, 0]))
        mean = ops.binary("Div", total, ops.cast(ops.f32(float(h * w)), dtype))
        return ops.reshape(mean, ops.i64([-1, c, 1, 1] if self.windows.keepdims else [-1, c]))
