"""The general path: every copy on the whole map, the method exactly as the paper states it.

mosaic (B*N, C, H, W) = T[:, None] * M[None, :, None] with M the (N, N) masks (row n: position n's mask),
then the whole tail runs on the B*N copies. It applies to any tail; the other paths are proven equal to it.
"""

from __future__ import annotations

from typing import TypeVar

from ovxai.conventions import HookPath, Mask
from ovxai.graph.macs import macs
from ovxai.graph.view import GraphView
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import Copies, Site
from ovxai.hook.tail import TailPlan

T = TypeVar("T")


class MosaicPath:
    name: HookPath = "mosaic"

    def plan(self, graph: GraphView, tail: TailPlan, options: HookOptions) -> TailPlan:
        return tail

    def replaced(self, plan: TailPlan) -> frozenset[str]:
        return frozenset()

    def macs(self, graph: GraphView, tail: TailPlan, plan: TailPlan, mask: Mask) -> int:
        return tail.positions(graph) * macs(graph, tail.nodes)

    def emit(self, hook: Site[T], plan: TailPlan) -> Copies[T]:
        """The product runs on 4-D views, (B, 1, C, N) x (1, N, 1, N): with a dynamic batch, OpenVINO's CPU plugin
        runs this 2-3x faster than the same broadcast over 5-D tensors."""
        ops = hook.ops
        one = ops.i64([1])
        flat = ops.reshape(hook.t, ops.concat([hook.batch, one, hook.channels, hook.n]))
        masks = ops.reshape(hook.masks, ops.concat([one, hook.n, one, hook.n]))
        tiled = ops.binary("Mul", flat, masks)
        mosaic = ops.reshape(tiled, ops.concat([ops.i64([-1]), ops.slice(hook.t_shape, 1, 4)]))
        return Copies({plan.target: mosaic})


MOSAIC = MosaicPath()
