"""Recipro-CAM's spatial masks: copy n keeps position n (one-hot) or the 3 x 3 Gaussian around it.

The Gaussian kernel is [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16, cut at the map's borders. Both masks are the
outer product of a 1-D profile along rows and columns, as a function of the distance d between a position
and the mask's centre: one-hot max(0, 1 - d), Gaussian max(0, 2 - d) / 4 = [1, 2, 1] / 4.
"""

from __future__ import annotations

from typing import TypeVar

from ovxai.conventions import Mask
from ovxai.graph.ops import Ops

T = TypeVar("T")

Tap = tuple[int, int, int]
"""A mask's weight at (row offset, column offset) from its centre, times 16."""
TAPS: dict[Mask, tuple[Tap, ...]] = {
    "onehot": ((0, 0, 16),),
    "gaussian": tuple((di, dj, (2 - abs(di)) * (2 - abs(dj))) for di in (-1, 0, 1) for dj in (-1, 0, 1)),
}


def mask_matrix(ops: Ops[T], w: T, n: T, mask: Mask, dtype: str) -> T:
    """(N, N) in ``dtype``: row n is position n's mask over all N = H * W positions, built from the runtime
    width ``w`` and ``n`` (1-element int64 tensors), so no mask constant is stored and any map size works."""
    idx = ops.cast(ops.arange(n), "float32")
    width = ops.cast(w, "float32")
    row = ops.unary("Floor", ops.binary("Div", idx, width))
    col = ops.binary("Sub", idx, ops.binary("Mul", row, width))

    def profile(coord: T) -> T:
        distance = ops.unary("Abs", ops.binary("Sub", ops.unsqueeze(coord, 1), ops.unsqueeze(coord, 0)))
        if mask == "onehot":
            return ops.unary("Relu", ops.binary("Sub", ops.f32(1.0), distance))
        return ops.binary("Div", ops.unary("Relu", ops.binary("Sub", ops.f32(2.0), distance)), ops.f32(4.0))

    return ops.cast(ops.binary("Mul", profile(row), profile(col)), dtype)
