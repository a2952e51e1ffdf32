"""The ViT-ReciproCAM hook: the CNN hook's scoring and outputs, with the copies of a transformer block's
input tokens (see :mod:`ovxai.hook.tokens` for the method and :mod:`ovxai.hook.paths` for its two paths)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ovxai.graph.ops import END, Ops
from ovxai.graph.view import Dim, GraphView
from ovxai.hook.masks import TAPS
from ovxai.hook.options import HookOptions
from ovxai.hook.recipro import ReciproCamHook
from ovxai.hook.tokens import TokenPlan

T = TypeVar("T")


class ViTReciproCamHook(ReciproCamHook[T]):
    """The saliency branch of a transformer: the masked copies of one block's input, the rest copied."""

    def __init__(self, ops: Ops[T], graph: GraphView, tokens: TokenPlan, options: HookOptions, choice: Any) -> None:
        self.tokens = tokens
        self.short = choice.name == "tokens"
        self.slots = TAPS[options.mask]
        super().__init__(ops, graph, tokens.tail, options, choice)

    def _geometry(self) -> tuple[T, T, T]:
        h, w = self.tokens.grid
        return self.ops.i64([h]), self.ops.i64([w]), self.ops.i64([h * w])

    def map_size(self) -> tuple[Dim, Dim]:
        return self.tokens.grid

    @property
    def length(self) -> int:
        """Tokens per copy: the short sequence's, or the model's own."""
        return self.tokens.aux + len(self.slots) + 1 if self.short else self.tokens.tokens

    def block_inputs(self) -> dict[str, Callable[[], T]]:
        """The copies of X and of LN1(X), built when something reads them (the short sequence's affine
        projections and readout may read neither)."""
        return {name: partial(self.token_copies, name) for name in (self.tokens.target, self.tokens.normed)}

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

    def token_copies(self, name: str) -> T:
        """(B*N, L, D) -- or (B*N, h, w, D) for a token map -- every copy's tokens: ``name``'s tokens weighted by
        the mask, masked-out ones zero."""
        ops = self.ops
        x = ops.tensor(name)
        depth = ops.slice(ops.shape(x), -1, END)
        sequence = ops.reshape(x, ops.concat([self.batch, ops.i64([-1]), depth]))  # a token map as (B, h*w, D)
        gathered = self.gathered(sequence, ops.cast(ops.f32(0.0), ops.dtype(name)), name)
        per_copy = [self.length] if self.graph.tensor(name).rank == 3 else list(self.tokens.grid)
        return ops.reshape(gathered, ops.concat([ops.i64([-1, *per_copy]), depth]))

    def gathered(self, x: T, zero: T, like: str) -> T:
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
