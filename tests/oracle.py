"""Independent reference for Recipro-CAM: the torch network itself, with the target module's output
replaced by each masked copy through a forward hook. Shares no code with ovxai."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # every oracle test needs torch: skipped, not failed, without it
from torch import nn

GAUSSIAN_3X3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16

# Tolerances come from the case itself: an engine computing in float32 strays from the exact maps by as much as
# torch's own float32 run does, times what its kernels add, whatever the CPU: NOISE_FACTOR. Winograd convolutions,
# other blockings and the shortcut's placement products sum in other orders (up to 20x torch's direct error seen
# on the Gaussian mask's shortcut). The floor, a few units in the last place of 1 (maps lie in [0, 1]), covers maps
# that float32 barely moves.
NOISE_FACTOR = 32.0
FLOAT32_FLOOR = 8 * float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Reference:
    """The oracle's maps computed in float64, and how far float32 moves them on this very case."""

    maps: np.ndarray
    noise: float  # max |float32 oracle - float64 oracle|

    @property
    def tolerance(self) -> float:
        """How far a float32 engine's maps may be from ``maps``."""
        return max(NOISE_FACTOR * self.noise, FLOAT32_FLOOR)

    @property
    def between_engines(self) -> float:
        """How far two float32 engines' (or paths') maps may be from each other: each strays by ``tolerance``."""
        return 2 * self.tolerance

    def check(self, got: np.ndarray, what: str = "maps") -> None:
        """``got`` within :attr:`tolerance` of the float64 maps."""
        assert got.shape == self.maps.shape, f"{what}: shape {got.shape}, oracle {self.maps.shape}"
        diff = float(np.abs(got.astype(np.float64) - self.maps).max())
        assert diff <= self.tolerance, f"{what}: max |got - oracle| = {diff:.3g} > {self.tolerance:.3g}"


def reference(
    model: nn.Module, module: str, images: np.ndarray, score: str = "softmax", mask: str = "onehot", call: int = 0
) -> Reference:
    """:func:`reference_saliency` in float64 (on a float64 copy of ``model``), with its float32 error."""
    exact = reference_saliency(copy.deepcopy(model).double(), module, images.astype(np.float64), score, mask, call)
    single = reference_saliency(model, module, images.astype(np.float32), score, mask, call)
    return Reference(exact, float(np.abs(single.astype(np.float64) - exact).max()))


def lower_precision_shift(
    model: nn.Module, module: str, images: np.ndarray, exact: Reference, weights_only: bool, **options: object
) -> float:
    """How far computing in a lower precision moves this case's exact maps: with ``weights_only`` the weights
    rounded to float16 (an IR whose weights are stored in FP16), else the whole network run in bfloat16 (the CPU
    plugin's default precision on CPUs that have it). A tolerance for such a run is NOISE_FACTOR times this, plus
    ``exact.tolerance``."""
    rounded = copy.deepcopy(model)
    if weights_only:
        with torch.no_grad():
            for tensor in [*rounded.parameters(), *rounded.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
        maps = reference_saliency(rounded.double(), module, images.astype(np.float64), **options)  # type: ignore[arg-type]
    else:
        maps = reference_saliency(rounded.bfloat16(), module, images, bfloat16=True, **options)  # type: ignore[arg-type]
    return float(np.abs(maps.astype(np.float64) - exact.maps).max())


def close(a: np.ndarray, b: np.ndarray, atol: float, what: str = "maps") -> None:
    """``a`` and ``b`` within ``atol`` (a tolerance from :class:`Reference`), with a readable message."""
    assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    assert diff <= atol, f"{what}: max difference {diff:.3g} > {atol:.3g}"


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
    model: nn.Module,
    module: str,
    images: np.ndarray,
    score: str = "softmax",
    mask: str = "onehot",
    call: int = 0,
    bfloat16: bool = False,
) -> np.ndarray:
    """(B, K, H, W) saliency; ``call`` picks which call of a reused module (e.g. a shared ReLU) is the target.

    A module returning a structure (Hugging Face's encoders: a ``ModelOutput``) has its first tensor masked; a
    container that is never called itself (a ``ModuleList``) stands for its last module. ``bfloat16``: ``model``
    computes in bfloat16 (the images and masks are given to it so)."""
    target = model.get_submodule(module)
    while isinstance(target, nn.ModuleList | nn.ModuleDict) and len(target):
        target = list(target.children())[-1]
    shape: list[int] = []

    def cast(x: torch.Tensor) -> torch.Tensor:
        return x.bfloat16() if bfloat16 else x

    with _capture_shape(target, call, shape):
        model(cast(torch.from_numpy(images[:1])))
    _, _, h, w = shape
    masks = cast(torch.from_numpy(spatial_masks(h, w, mask))[:, None])  # (N, 1, H, W)
    maps = []
    for image in images:
        copies = cast(torch.from_numpy(image)[None].repeat(h * w, 1, 1, 1))  # every layer sees N rows, skips too
        with _replace_output(target, call, lambda out: out * masks):
            logits = model(copies).reshape(h * w, -1).double()
        scores = {"softmax": torch.softmax(logits, -1), "sigmoid": torch.sigmoid(logits), "logits": logits}[score]
        s = scores.T.numpy()  # (K, N)
        low, high = s.min(1, keepdims=True), s.max(1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        maps.append(((s - low) / span).reshape(-1, h, w))
    return np.stack(maps).astype(images.dtype)  # float32, or float64 for the exact reference


class _replace_output:
    def __init__(self, module: nn.Module, call: int, fn) -> None:  # type: ignore[no-untyped-def]
        self.module, self.call, self.fn, self.seen = module, call, fn, 0

    def _hook(self, _m, _i, out):  # type: ignore[no-untyped-def]
        self.seen += 1
        if self.seen - 1 != self.call:
            return None
        if isinstance(out, torch.Tensor):
            return self.fn(out)
        first = next(k for k, v in out.items() if isinstance(v, torch.Tensor))  # a ModelOutput: its first tensor
        replaced = self.fn(out[first])
        if replaced is not None:
            out[first] = replaced
        return out

    def __enter__(self) -> None:
        self.handle = self.module.register_forward_hook(self._hook)

    def __exit__(self, *_: object) -> None:
        self.handle.remove()
        assert self.seen > self.call, f"module called {self.seen} times, target call {self.call} never happened"


def _capture_shape(module: nn.Module, call: int, into: list[int]) -> _replace_output:
    def grab(out: torch.Tensor) -> None:
        into.extend(out.shape)

    return _replace_output(module, call, grab)


# ------------------------------------------------------------------------------------------ ViT-ReciproCAM


def token_masks(h: int, w: int, kind: str, aux_tokens: int) -> np.ndarray:
    """(N, A + H*W): mask n over the tokens, auxiliary tokens (the first ``aux_tokens``) kept at 1."""
    spatial = spatial_masks(h, w, kind).reshape(h * w, h * w)
    return np.concatenate([np.ones((h * w, aux_tokens), dtype=np.float32), spatial], axis=1)


@torch.no_grad()
def reference_vit_saliency(
    model: nn.Module,
    block_module: str,
    norm_module: str | None,
    images: np.ndarray,
    score: str = "logits",
    mask: str = "gaussian",
    aux_tokens: int = 1,
) -> np.ndarray:
    """(B, K, h, w) ViT-ReciproCAM maps (Byun & Lee, arXiv:2310.02588) of a token classifier.

    X (1, A + h*w, D) -- or a (1, h, w, D) token map, as Swin's blocks read -- is the input of the
    transformer block ``block_module`` and ``norm_module`` that
    block's first normalisation (timm ``blocks.11.norm1``, torchvision ``encoder.layers.encoder_layer_11.ln_1``), or
    None for a block with no norm before its attention (LeViT: the masked X is all the block reads).
    Copy n of the network runs with the block's input replaced by M_n * X and the norm's output replaced by
    M_n * norm(X) - the norm evaluated on the UNMASKED X - where M_n keeps the A auxiliary tokens (CLS,
    distillation, registers) and multiplies the spatial ones by the one-hot or cut 3x3 Gaussian mask around
    position n (row-major over the h x w token grid). Class scores of copy n are the map's value at n,
    min-max normalised per image and class as :func:`reference_saliency` does.

    This is what openvino-xai 1.1.0's IR ``ViTReciproCAM`` computes
    (openvino_xai/methods/white_box/recipro_cam.py), read from its source:

    * target (``_get_saliency_map``, l. 236-238; ``model_parser.py`` ``get_target_node``): the k-th last ``Add``
      with two non-constant 3-D inputs, k = 2 * 1 + final_norm = 3 by default (l. 224): the residual
      Add that ends the second-to-last block, i.e. the INPUT tokens of the last block;
    * the norm (l. 257-273): from the target's non-Add consumer it walks the single-consumer chain down to the
      first ``Add`` (the LayerNorm's bias add, MVN -> Multiply -> Add) and feeds the mosaic of that node
      OF THE ORIGINAL MODEL (norm on the unmasked X, then masked) to the norm's consumers in the copy;
    * the residual (l. 276-278): the mosaic of X replaces ``input(0)`` of the block's first residual Add:
      it assumes input 0 is the skip (timm's ``x + attn(norm1(x))``); torchvision's EncoderBlock writes
      ``x + input`` (skip at input 1), so there the ATTENTION OUTPUT is replaced by M_n * X while the
      unmasked skip stays (see tools/bench_vit.py's measurement);
    * masks (``_get_mosaic_feature_map``, l. 328-380): one-hot or the Gaussian [1 2 1; 2 4 2; 1 2 1] / 16 cut
      at the borders (no renormalisation), Gaussian by default (l. 206); auxiliary tokens kept (``cls_token``
      True by default). It counts A = tokens - h*w (l. 296-298, h = w = int(sqrt(tokens - 1))) but then
      hard-codes A = 1: the Gaussian path slices the spatial tokens as [1 : h*w + 1] (l. 338-340) and the
      one-hot mask has one auxiliary column (l. 365-372), so a DeiT (A = 2) or register ViT (A = 5) gets
      wrong tokens (Gaussian) or a shape error (one-hot);
    * score: the model's output node itself (``get_logit_node(search_softmax=False)``, l. 245): logits for a
      model without a final softmax; normalisation (``base.py`` ``_scale_saliency_maps``): per class
      (x - min) / (max - min + 1e-12) * 255, cast to u8 unless ``embed_scaling=False``; batch 1 only
      (Tile by h*w of a batch-1 tensor).

    Its torch variant (``white_box/torch.py`` ``TorchViTReciproCAM``) differs: it masks only the output of
    the third-last norm module (the last block's norm1) and leaves the residual unmasked.
    """
    block = model.get_submodule(block_module)
    norm = None if norm_module is None else model.get_submodule(norm_module)
    tokens: list[int] = []
    with _capture_block_input(block, tokens):
        model(torch.from_numpy(images[:1]))
    if len(tokens) == 4:  # a (1, h, w, D) token map (Swin): no auxiliary tokens, the masks keep its layout
        _, side, width, _ = tokens
        assert side == width and aux_tokens == 0, f"token map {tokens} with {aux_tokens} auxiliary tokens"
        masks = torch.from_numpy(token_masks(side, side, mask, 0)).reshape(side * side, side, side, 1)
    else:
        n_tokens = tokens[1]
        side = round((n_tokens - aux_tokens) ** 0.5)
        assert side * side == n_tokens - aux_tokens, f"{n_tokens} tokens are not {aux_tokens} + a square grid"
        masks = torch.from_numpy(token_masks(side, side, mask, aux_tokens))[:, :, None]  # (N, T, 1)
    maps = []
    for image in images:
        copies = torch.from_numpy(image)[None].repeat(side * side, 1, 1, 1)  # every layer sees N rows
        with _masked_block(block, norm, masks):
            logits = model(copies).reshape(side * side, -1).double()
        maps.append(_normalised(logits, score).reshape(-1, side, side))
    return np.stack(maps).astype(np.float32)


def _normalised(logits: torch.Tensor, score: str) -> np.ndarray:
    """(N, K) logits -> (K, N) scores min-max normalised per class (a flat class gives zeros)."""
    scores = {"softmax": torch.softmax(logits, -1), "sigmoid": torch.sigmoid(logits), "logits": logits}[score]
    s = scores.T.numpy()
    low, high = s.min(1, keepdims=True), s.max(1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return (s - low) / span  # type: ignore[no-any-return]


class _capture_block_input:
    """Record the shape of the block's first positional input (the tokens)."""

    def __init__(self, block: nn.Module, into: list[int]) -> None:
        self.block, self.into = block, into

    def _hook(self, _m, args):  # type: ignore[no-untyped-def]
        self.into[:] = list(args[0].shape)

    def __enter__(self) -> None:
        self.handle = self.block.register_forward_pre_hook(self._hook)

    def __exit__(self, *_: object) -> None:
        self.handle.remove()


class _masked_block:
    """Block input -> masks * X; norm input -> the unmasked X; norm output -> masks * norm(X)."""

    def __init__(self, block: nn.Module, norm: nn.Module | None, masks: torch.Tensor) -> None:
        self.block, self.norm, self.masks = block, norm, masks
        self.unmasked: torch.Tensor | None = None
        self.norm_calls = 0

    def _block_input(self, _m, args):  # type: ignore[no-untyped-def]
        assert self.unmasked is None, "the target block ran twice"
        self.unmasked = args[0]
        return (args[0] * self.masks, *args[1:])

    def _norm_input(self, _m, args):  # type: ignore[no-untyped-def]
        assert self.unmasked is not None and self.norm_calls == 0, "the norm must run once, inside the block"
        return (self.unmasked, *args[1:])

    def _norm_output(self, _m, _args, out):  # type: ignore[no-untyped-def]
        self.norm_calls += 1
        return out * self.masks

    def __enter__(self) -> None:
        self.handles = [self.block.register_forward_pre_hook(self._block_input)]
        if self.norm is not None:
            self.handles += [
                self.norm.register_forward_pre_hook(self._norm_input),
                self.norm.register_forward_hook(self._norm_output),
            ]

    def __exit__(self, *_: object) -> None:
        for handle in self.handles:
            handle.remove()
        assert self.norm is None or self.norm_calls == 1, (
            f"the norm ran {self.norm_calls} times inside the block, expected once"
        )


# ----------------------------------------------------------------------------------------------- gradient CAMs


def normalised(maps: np.ndarray) -> np.ndarray:
    """Min-max per map over its last two axes (a constant map gives zeros)."""
    low, high = maps.min(axis=(-2, -1), keepdims=True), maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / np.where(high > low, high - low, 1.0)  # type: ignore[no-any-return]


def gradient_reference(
    method: str,
    model: nn.Module,
    module: str,
    images: np.ndarray,
    classes: np.ndarray,
    score: str = "logits",
    steps: int = 20,
    black: float = 0.0,
) -> np.ndarray:
    """(B, K', h, w) raw maps of a gradient CAM at ``module``'s output for each image's ``classes`` (B, K'), computed
    by the reference implementations in the model's own precision: pytorch-grad-cam's ``GradCAM``,
    ``GradCAMPlusPlus`` (the paper's alpha), ``XGradCAM`` and ``LayerCAM`` (its ``get_cam_image`` on the activations
    and gradients its hooks record, ReLU'd as its ``compute_cam_per_layer`` does, before its upsampling and its
    normalisation with an epsilon), and tools/eval's ``IntegratedGradCAM`` from the uniform image ``black``."""
    target = model.get_submodule(module)
    dtype = next(model.parameters()).dtype
    x = torch.from_numpy(images).to(dtype)
    if method == "integrated-gradcam":
        from tools.eval.methods import IntegratedGradCAM

        ig = IntegratedGradCAM(model, target, black, steps=steps, batch=steps)
        with _scored(model, score):
            return np.array(
                [[ig.raw(x[b : b + 1], int(c)).detach().numpy() for c in ids] for b, ids in enumerate(classes)]
            )
    from models import zoo

    zoo.torchvision()  # pytorch-grad-cam imports torchvision, whose compiled operators do not load beside this torch
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM

    cam = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM}[method](
        model, [target]
    )
    maps = []
    for k in range(classes.shape[1]):
        recorder = cam.activations_and_grads
        outputs = recorder(x)
        model.zero_grad()
        _score(outputs, score).gather(1, torch.from_numpy(classes[:, k : k + 1])).sum().backward()
        acts, grads = recorder.activations[0].numpy(), recorder.gradients[0].numpy()
        maps.append(np.maximum(cam.get_cam_image(x, target, None, acts, grads, False), 0))
    cam.activations_and_grads.release()
    return np.stack(maps, axis=1)


def _score(logits: torch.Tensor, score: str) -> torch.Tensor:
    if score == "softmax":
        return torch.softmax(logits, 1)
    return torch.sigmoid(logits) if score == "sigmoid" else logits


class _scored:
    """The model's output through the score (softmax, sigmoid) while inside: what IntegratedGradCAM differentiates."""

    def __init__(self, model: nn.Module, score: str) -> None:
        self.model, self.score = model, score

    def _hook(self, _m, _i, out):  # type: ignore[no-untyped-def]
        return _score(out, self.score)

    def __enter__(self) -> None:
        self.handle = self.model.register_forward_hook(self._hook) if self.score != "logits" else None

    def __exit__(self, *_: object) -> None:
        if self.handle is not None:
            self.handle.remove()
