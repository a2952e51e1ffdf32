"""The explanation methods under comparison, behind one interface: ``explain(x, cls) -> map``.

``x`` is one preprocessed image (1, 3, H, W) float32 and the map comes back at the method's own
resolution (7 x 7 for the CAM family on EfficientNet-Lite0, H x W for RISE); the harness upsamples and
min-max normalises every map the same way before any metric sees it.

Where each method comes from, and on which runtime it runs:

* Recipro-CAM: ovxai's exported model (OpenVINO IR, CPU, f32), one inference gives logits and maps.
* Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, Integrated Grad-CAM "in graph": the same, exported with ovxai's
  ``--method``: the gradient is the graph's own backward, no torch at run time (``InGraphCAM``).
* CAM, Grad-CAM, XGrad-CAM, Score-CAM: ``torchcam`` (torch, CPU), unchanged.
* Grad-CAM++ and Smooth Grad-CAM++: ``torchcam``'s hooks, back-propagation and noise sampling, with the
  weight formula corrected to the papers' (see ``GradCAMppPaper``).
* Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): own implementation, ``IntegratedGradCAM``.
* RISE (Petsiuk et al., BMVC 2018): own implementation, black box: only class probabilities of the plain
  (unpatched) model through OpenVINO.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU plugin would pick bf16 here: f32 everywhere, fair


# ------------------------------------------------------------------------------------------------ models


def split_head_activation(net: nn.Module) -> nn.Module:
    """Give EfficientNet-Lite's head its own activation module, ``net._head_act``.

    The library's ``EfficientNet`` calls one ``_swish`` (ReLU6) module twice per forward, for the stem and
    for the head, so a hook on ``_swish`` fires twice and torchcam would keep whichever output came last.
    The Recipro-CAM target is the second call (``_conv_head`` -> ``_bn1`` -> ReLU6, 1280 x 7 x 7). Here the
    head gets a distinct ``nn.ReLU6`` instance (same function, no weights) and ``extract_features`` is
    rebound to use it, so every torch method can target ``_head_act`` unambiguously. Logits are unchanged
    (the harness checks them against OpenVINO's)."""
    if not isinstance(net._swish, nn.ReLU6):
        raise TypeError("expected EfficientNet-Lite (ReLU6 activations)")
    net._head_act = nn.ReLU6()

    def extract_features(inputs: torch.Tensor) -> torch.Tensor:
        x = net._swish(net._bn0(net._conv_stem(inputs)))
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
        return net._head_act(net._bn1(net._conv_head(x)))

    net.extract_features = extract_features
    return net


def to_torch(x: NDArray[np.float32]) -> torch.Tensor:
    """numpy NCHW -> torch channels-last (2-3x faster on this CPU for depthwise convs; same values)."""
    return torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)


class OVClassifier:
    """A classifier compiled by OpenVINO (CPU, f32): logits and softmax probabilities for a batch."""

    def __init__(self, path: Path, batch: int = 64) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", F32)
        self.request = self.compiled.create_infer_request()
        self.batch = batch
        self.output = self.compiled.output(0)

    def logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        parts = []
        for lo in range(0, len(x), self.batch):
            self.request.infer({0: np.ascontiguousarray(x[lo : lo + self.batch])})
            parts.append(self.request.get_tensor(self.output).data.copy())
        return np.concatenate(parts)

    def probs(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        z = self.logits(x).astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------- interface


class Explainer:
    """A saliency method: ``explain(x (1, 3, H, W), cls) -> (h, w)`` raw map (any scale)."""

    name: str = ""
    runtime: str = ""

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        raise NotImplementedError


class ReciproCAM(Explainer):
    """Our exported model: one OpenVINO inference returns ``logits`` and ``saliency_map`` (B, K, h, w)."""

    runtime = "OpenVINO"

    def __init__(self, name: str, path: Path) -> None:
        import openvino as ov

        self.name = name
        self.compiled = ov.Core().compile_model(str(path), "CPU", F32)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output("saliency_map")

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        self.request.infer({0: x})
        return self.request.get_tensor(self.output).data[0, cls].copy()


class InGraphCAM(Explainer):
    """A gradient CAM ovxai exported into the graph (``--method``, ``--explain top5``): one OpenVINO inference gives
    the logits and the maps of the model's five best classes; the explained class is among them (the fidelity set
    explains the top-1, the pointing game keeps trials whose class the model ranks in its top 5)."""

    runtime = "OpenVINO"

    def __init__(self, name: str, path: Path) -> None:
        import openvino as ov

        self.name = name
        self.compiled = ov.Core().compile_model(str(path), "CPU", F32)
        self.request = self.compiled.create_infer_request()
        self.maps, self.classes = self.compiled.output("saliency_map"), self.compiled.output("saliency_classes")

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        self.request.infer({0: x})
        where = np.flatnonzero(self.request.get_tensor(self.classes).data[0] == cls)
        if not where.size:
            raise ValueError(f"class {cls} is not among the five the model maps for this image")
        return self.request.get_tensor(self.maps).data[0, where[0]].copy()


class TorchCAM(Explainer):
    """A ``torchcam`` extractor, created for each call and removed after it (so that no other method's
    hooks are active while one runs, and the timing includes everything a user pays)."""

    runtime = "torch"

    def __init__(self, name: str, net: nn.Module, factory: Callable[[nn.Module], Any], gradient: bool) -> None:
        self.name, self.net, self.factory, self.gradient = name, net, factory, gradient

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        xt = to_torch(x)
        with self.factory(self.net) as extractor:
            if self.gradient:
                scores = self.net(xt)
                maps = extractor(class_idx=cls, scores=scores)
            else:
                with torch.no_grad():
                    self.net(xt)
                maps = extractor(class_idx=cls)
        return maps[0][0].detach().float().numpy()


# ----------------------------------------------------------------------------- Grad-CAM++ weight formula


def gradcampp_weights(grad: torch.Tensor, act: torch.Tensor, grad2: torch.Tensor, grad3: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhay et al., eq. 19 with the exponential-score identities):

        alpha_ij = g2_ij / (2 g2_ij + g3_ij * sum_ab A_ab),   w = sum_ij alpha_ij * relu(g_ij)

    ``grad`` (B, C, h, w) is the first derivative of the class score, ``grad2`` / ``grad3`` its square and
    cube (or, for Smooth Grad-CAM++, their averages over noisy copies). alpha is 0 where g2 is 0."""
    sum_a = act.flatten(2).sum(-1)[..., None, None]
    denom = 2 * grad2 + grad3 * sum_a
    alpha = torch.where(grad2 > 0, grad2 / torch.where(denom == 0, torch.ones_like(denom), denom), 0.0)
    return (alpha * torch.relu(grad)).flatten(2).sum(-1)


def _torchcam_gradcampp() -> tuple[type, type]:
    """Subclasses of torchcam's Grad-CAM++ and Smooth Grad-CAM++ that only replace the weight formula.

    torchcam 0.5.0 computes alpha with ``alpha[idx][mask].div_(...)``: boolean indexing returns a copy, so
    the division is lost and its Grad-CAM++ weights are ``sum relu(g)^3``; it also uses
    ``sum_ab g3_ab * A_ab`` where the paper has ``g3_ij * sum_ab A_ab``; and its Smooth Grad-CAM++ uses
    the last noisy sample's gradient instead of the average (Omeiza et al. average all three) and combines
    the last noisy sample's activations; here the clean image's activations are combined."""
    from torchcam.methods import GradCAMpp, SmoothGradCAMpp

    class GradCAMppPaper(GradCAMpp):
        def _get_weights(self, class_idx: Any, scores: torch.Tensor, eps: float = 1e-8, **kwargs: Any) -> list:
            self._backprop(scores, class_idx, **kwargs)
            return [gradcampp_weights(g, a, g**2, g**3) for g, a in zip(self.hook_g, self.hook_a, strict=True)]

    class SmoothGradCAMppPaper(SmoothGradCAMpp):
        def _compute_smoothgrad_weights(self, class_idx: Any, eps: float, **kwargs: Any) -> list:
            init_fmap = [act.clone() for act in self.hook_a]
            g1 = [torch.zeros_like(a) for a in self.hook_a]
            g2 = [torch.zeros_like(a) for a in self.hook_a]
            g3 = [torch.zeros_like(a) for a in self.hook_a]
            for _ in range(self.num_samples):
                noisy = self._input + self._distrib.sample(self._input.size()).to(device=self._input.device)
                self._backprop(self.model(noisy.requires_grad_(True)), class_idx, **kwargs)
                for i, g in enumerate(self.hook_g):
                    g1[i] += g / self.num_samples
                    g2[i] += g**2 / self.num_samples
                    g3[i] += g**3 / self.num_samples
            self.hook_a = init_fmap
            return [gradcampp_weights(*args) for args in zip(g1, init_fmap, g2, g3, strict=True)]

    return GradCAMppPaper, SmoothGradCAMppPaper


# ------------------------------------------------------------------------------------- Integrated Grad-CAM


class IntegratedGradCAM(Explainer):
    """Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): Grad-CAM integrated along the straight path
    from a baseline image x' (black) to the image x, in ``steps`` Riemann steps x_m = x' + m/M (x - x'):

        L = ReLU( 1/M  sum_{m=1..M}  sum_k  w_k(x_m) * (A_k(x_m) - A_k(x')) ),  w_k(x_m) = mean_ij dS_c/dA_k(x_m)

    S_c is the class logit and A the target layer's output. Like the authors' code, each step contributes
    the Grad-CAM of the activation *difference to the baseline*; the ReLU is applied once, to the sum.
    Known answer (tested): for a network linear up to A and linear after it (GAP + FC) with a zero
    baseline, L = (M + 1) / (2 M) * Grad-CAM(x) exactly, so the normalised maps coincide."""

    runtime = "torch"

    def __init__(
        self, net: nn.Module, layer: nn.Module, baseline: float, steps: int = 20, batch: int = 10, name: str = ""
    ) -> None:
        self.net, self.layer, self.baseline, self.steps, self.batch = net, layer, baseline, steps, batch
        self.name = name or "Integrated Grad-CAM"

    def raw(self, x: torch.Tensor, cls: int) -> torch.Tensor:
        """The un-normalised map (h, w) for one image x (1, C, H, W)."""
        store: dict[str, torch.Tensor] = {}

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            store["a"] = out

        handle = self.layer.register_forward_hook(hook)
        try:
            base = torch.full_like(x, self.baseline)
            with torch.no_grad():
                self.net(base)
                a_base = store["a"].detach()
            total = torch.zeros_like(a_base[0, 0])
            alphas = torch.arange(1, self.steps + 1, dtype=x.dtype) / self.steps
            for lo in range(0, self.steps, self.batch):
                a = alphas[lo : lo + self.batch].view(-1, 1, 1, 1)
                xs = (base + a * (x - base)).contiguous(memory_format=torch.channels_last)
                scores = self.net(xs)
                (grad,) = torch.autograd.grad(scores[:, cls].sum(), store["a"])
                w = grad.mean(dim=(2, 3), keepdim=True)
                total += (w * (store["a"].detach() - a_base)).sum(dim=(0, 1))
            return torch.relu(total / self.steps)
        finally:
            handle.remove()

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        return self.raw(to_torch(x), cls).numpy()


# ---------------------------------------------------------------------------------------------------- RISE


def rise_masks(count: int, size: int, cells: int = 7, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    """RISE's random masks (count, size, size), float16: a ``cells`` x ``cells`` binary grid (each cell on
    with probability ``p``), upsampled bilinearly to (cells + 1) * ceil(size / cells) and cropped at a random
    shift, so that the mask edges are smooth and do not sit on a fixed lattice."""
    gen = np.random.default_rng(seed)
    cell = math.ceil(size / cells)
    up = (cells + 1) * cell
    out = torch.empty(count, size, size, dtype=torch.float16)
    for lo in range(0, count, 256):
        n = min(256, count - lo)
        grid = torch.from_numpy((gen.random((n, 1, cells, cells)) < p).astype(np.float32))
        big = F.interpolate(grid, size=(up, up), mode="bilinear", align_corners=False)[:, 0]
        shifts = gen.integers(0, cell, size=(n, 2))
        for i, (dy, dx) in enumerate(shifts):
            out[lo + i] = big[i, dy : dy + size, dx : dx + size].half()
    return out


class RISE(Explainer):
    """RISE, black box: saliency = sum_i P_c(x * M_i) M_i / (N p), the class probability of each randomly
    masked copy weighting its mask. Masked pixels become 0, the model's input mean (grey). Only the plain
    model's probabilities are used, through OpenVINO: ``N`` inferences per map."""

    runtime = "OpenVINO"

    def __init__(
        self, probs: Callable[[NDArray[np.float32]], NDArray[np.float64]], masks: torch.Tensor, p: float = 0.5
    ) -> None:
        self.probs, self.masks, self.p = probs, masks, p
        self.name = f"RISE ({len(masks)} masks)"

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        n, h, w = self.masks.shape
        sal = np.zeros(h * w, dtype=np.float64)
        for lo in range(0, n, 64):
            m = self.masks[lo : lo + 64].float().numpy()
            scores = self.probs(x * m[:, None])[:, cls]
            sal += scores @ m.reshape(len(m), -1)
        return (sal / (n * self.p)).reshape(h, w).astype(np.float32)


class CenterBaseline(Explainer):
    """Not a method: a map peaking at the image centre, the pointing game's trivial baseline."""

    name, runtime = "Centre (baseline)", "-"

    def explain(self, x: NDArray[np.float32], cls: int) -> NDArray[np.float32]:
        h, w = x.shape[2:]
        yy, xx = np.mgrid[0:h, 0:w]
        return -np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2).astype(np.float32)


# ------------------------------------------------------------------------------------------------ factory


def torch_methods(net: nn.Module, layer: str, fc: str | None, smooth_samples: int = 4) -> list[Explainer]:
    """The torchcam-based methods on ``net`` at module ``layer`` (CAM needs the classifier ``fc``)."""
    from torchcam.methods import CAM, GradCAM, ScoreCAM, XGradCAM

    gcpp, sgcpp = _torchcam_gradcampp()
    out: list[Explainer] = []
    if fc is not None:
        out.append(TorchCAM("CAM", net, lambda m: CAM(m, layer, fc), gradient=False))
    out += [
        TorchCAM("Grad-CAM", net, lambda m: GradCAM(m, layer), gradient=True),
        TorchCAM("Grad-CAM++", net, lambda m: gcpp(m, layer), gradient=True),
        TorchCAM(
            "Smooth Grad-CAM++", net, lambda m: sgcpp(m, layer, num_samples=smooth_samples, std=0.3), gradient=False
        ),
        TorchCAM("XGrad-CAM", net, lambda m: XGradCAM(m, layer), gradient=True),
        TorchCAM("Score-CAM", net, lambda m: ScoreCAM(m, layer, batch_size=16), gradient=False),
    ]
    return out


def upsample(saliency: NDArray[np.float32], size: tuple[int, int]) -> NDArray[np.float32]:
    """Bilinear upsampling to the input size (align_corners=False, as torchcam and most CAM code), then
    min-max to [0, 1]: every method's map goes through exactly this before being measured."""
    s = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    if tuple(s.shape[2:]) != tuple(size):
        s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
    s = s[0, 0].numpy()
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
