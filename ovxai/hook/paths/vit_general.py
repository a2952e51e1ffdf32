"""The general path for transformers: every copy on all A + N tokens, ViT-ReciproCAM exactly as the paper
states it. It applies to any block (Swin's windowed token maps included); the short sequence is proven equal
to it."""

from __future__ import annotations

from typing import TypeVar

from ovxai.conventions import HookPath, Mask
from ovxai.graph.macs import node_macs
from ovxai.graph.view import GraphView
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import Copies, TokenSite
from ovxai.hook.tokens import TokenPlan

T = TypeVar("T")


class TokenMosaicPath:
    name: HookPath = "mosaic"

    def plan(self, graph: GraphView, tokens: TokenPlan, options: HookOptions) -> TokenPlan:
        return tokens

    def replaced(self, plan: TokenPlan) -> frozenset[str]:
        return frozenset()

    def macs(self, graph: GraphView, tokens: TokenPlan, plan: TokenPlan, mask: Mask) -> int:
        """The tail (but the first norm, which the copies read masked from the original path) N times."""
        n = tokens.grid[0] * tokens.grid[1]
        return n * sum(node_macs(graph, node) for node in tokens.tail.nodes if node.name not in tokens.norm_nodes)

    def emit(self, hook: TokenSite[T], plan: TokenPlan) -> Copies[T]:
        return Copies(replaced=plan.norm_nodes, lazy=hook.block_inputs())  # LN1's copies are read masked


TOKEN_MOSAIC = TokenMosaicPath()
