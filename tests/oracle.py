"""Independent reference for Recipro-CAM: the torch network itself, with the target module's output
replaced by each masked copy through a forward hook. Shares no code with ovxai."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # every oracle test needs torch: skipped, not failed, without it
from torch import nn

GAUSSIAN_3X3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16


def spatial_masks(h: int, w: int, kind: str) -> np.ndarray:
    """(N, H, W): mask n is one at position n, or the 3x3 Gaussian centred there, cut at the borders."""
    masks = np.zeros((h * w, h, w), dtype=np.float32)
    for n in range(h * w):
        i, j = divmod(n, w)
        if kind == "onehot":
            masks[n, i, j] = 1.0
            continue
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    masks[n, i + di, j + dj] = GAUSSIAN_3X3[di + 1, dj + 1]
    return masks


@torch.no_grad()
def reference_saliency(
    model: nn.Module, module: str, images: np.ndarray, score: str = "softmax", mask: str = "onehot", call: int = 0
) -> np.ndarray:
    """(B, K, H, W) saliency; ``call`` picks which call of a reused module (e.g. a shared ReLU) is the target."""
    target = model.get_submodule(module)
    shape: list[int] = []
    with _capture_shape(target, call, shape):
        model(torch.from_numpy(images[:1]))
    _, _, h, w = shape
    masks = torch.from_numpy(spatial_masks(h, w, mask))[:, None]  # (N, 1, H, W)
    maps = []
    for image in images:
        copies = torch.from_numpy(image)[None].repeat(h * w, 1, 1, 1)  # every layer sees N rows, skips too
        with _replace_output(target, call, lambda out: out * masks):
            logits = model(copies).reshape(h * w, -1).double()
        scores = {"softmax": torch.softmax(logits, -1), "sigmoid": torch.sigmoid(logits), "logits": logits}[score]
        s = scores.T.numpy()  # (K, N)
        low, high = s.min(1, keepdims=True), s.max(1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        maps.append(((s - low) / span).reshape(-1, h, w))
    return np.stack(maps).astype(np.float32)


class _replace_output:
    def __init__(self, module: nn.Module, call: int, fn) -> None:  # type: ignore[no-untyped-def]
        self.module, self.call, self.fn, self.seen = module, call, fn, 0

    def _hook(self, _m, _i, out):  # type: ignore[no-untyped-def]
        self.seen += 1
        return self.fn(out) if self.seen - 1 == self.call else None

    def __enter__(self) -> None:
        self.handle = self.module.register_forward_hook(self._hook)

    def __exit__(self, *_: object) -> None:
        self.handle.remove()
        assert self.seen > self.call, f"module called {self.seen} times, target call {self.call} never happened"


def _capture_shape(module: nn.Module, call: int, into: list[int]) -> _replace_output:
    def grab(out: torch.Tensor) -> None:
        into.extend(out.shape)

    return _replace_output(module, call, grab)
