"""Every classifier the tests and tools build, by name: a torch module with seeded weights, and its input size.

``build(name)`` knows four kinds of name:

* a recipe of ``architectures.py`` (``resnet18``, ``resnet50``, ``vgg16``, ``mobilenet_v3``, ``tiny``): layouts
  written here with torchvision's module names, random weights (:func:`architectures.randomize`);
* ``efficientnet_lite0``: EfficientNet-Lite0 with its real ImageNet weights (``efficientnet_lite0.py``);
* ``torchvision:<constructor>`` and ``timm:<constructor>``: the libraries' own model code, ImageNet head, 224 px,
  random weights calibrated by :func:`randomize` (vision transformers: ``vits.py``).

torchvision's wheel carries compiled operators (``torchvision::nms`` ...) built for the CUDA torch; beside the
pinned CPU torch, registering their fake (meta) kernels fails at import. The models are pure Python and never
call those operators, so torchvision is imported while ``torch.library.register_fake`` is a no-op decorator,
and the original is put back afterwards. Always import torchvision and timm through :func:`torchvision` and
:func:`timm`.

Nothing is ever downloaded: every library model is built with ``pretrained=False`` / ``weights=None``. Random
weights need two things to make a saliency map meaningful: BatchNorm statistics that are not the identity
(calibrated on random batches, after a random affine), so that every spatial position matters; and logits
that spread over several units, so that the masked copies' scores differ well above float32 rounding (the
classifier is re-initialised with a larger gain).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
from torch import nn

from models import architectures as arch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm never reaches a hub: pretrained=False everywhere

_CALIBRATION_BATCHES = 3
_CALIBRATION_BATCH_SIZE = 4
LIBRARY_SIZE, LIBRARY_CLASSES = 224, 1000  # ``library:constructor`` names: the ImageNet models as deployed

RECIPES: dict[str, tuple[Callable[[], nn.Module], int]] = {  # name: (layout, input size)
    "resnet18": (arch.resnet18, 224),
    "resnet50": (arch.resnet50, 224),
    "vgg16": (arch.VGG16, 224),
    "mobilenet_v3": (arch.MobileNetV3, 224),
    "tiny": (arch.TinyCNN, 32),
}
NAMES = ("efficientnet_lite0", *RECIPES)  # with any torchvision:<constructor> and timm:<constructor>


def build(name: str, seed: int = 0) -> tuple[nn.Module, int]:
    """(the torch model of ``name`` in eval mode, its input size); ``seed`` seeds the random weights."""
    if name == "efficientnet_lite0":
        from models import efficientnet_lite0

        return efficientnet_lite0.build(), efficientnet_lite0.SIZE
    library, _, constructor = name.partition(":")
    if constructor and library in ("torchvision", "timm"):
        factory = build_torchvision if library == "torchvision" else build_timm
        return factory(constructor, LIBRARY_SIZE, seed, num_classes=LIBRARY_CLASSES), LIBRARY_SIZE
    if name not in RECIPES:
        known = ", ".join(NAMES)
        raise KeyError(f"unknown model '{name}': use one of {known}, torchvision:<constructor> or timm:<constructor>")
    layout, size = RECIPES[name]
    torch.manual_seed(seed)
    return arch.randomize(layout(), seed), size


# ---------------------------------------------------------------------------------------------- libraries


@contextlib.contextmanager
def _fake_kernels_ignored() -> Iterator[None]:
    """``torch.library.register_fake`` as a no-op decorator, restored on exit."""
    original = torch.library.register_fake

    def register_fake(*_args: object, **_kwargs: object) -> Callable[[Callable[..., object]], Callable[..., object]]:
        def keep(fn: Callable[..., object]) -> Callable[..., object]:
            return fn

        return keep

    torch.library.register_fake = register_fake  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.library.register_fake = original


def torchvision() -> ModuleType:
    """torchvision, imported without its compiled operators' fake kernels."""
    if "torchvision" not in sys.modules:  # a failed plain import may have left submodules behind
        for name in [n for n in sys.modules if n.startswith("torchvision.")]:
            del sys.modules[name]
    with _fake_kernels_ignored():
        import torchvision as tv
    return tv


def timm() -> ModuleType:
    """timm (which imports torchvision: that goes first, through :func:`torchvision`)."""
    torchvision()
    import timm as tm

    return tm


def build_torchvision(name: str, size: int, seed: int = 0, **kwargs: object) -> nn.Module:
    """``torchvision.models.<name>(weights=None, num_classes=10, **kwargs)`` with random weights (10 classes keep
    the tests small; ``num_classes=1000`` gives the ImageNet head that is deployed)."""
    torch.manual_seed(seed)
    factory = getattr(torchvision().models, name)
    return randomize(factory(weights=None, **{"num_classes": 10, **kwargs}), size, seed)


def build_timm(name: str, size: int, seed: int = 0, **kwargs: object) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=10, **kwargs)`` with random weights."""
    torch.manual_seed(seed)
    model = timm().create_model(name, pretrained=False, **{"num_classes": 10, **kwargs})
    return randomize(model, size, seed)


# ------------------------------------------------------------------------------------------ random weights


def _classifier(model: nn.Module) -> nn.Module:
    """The layer that produces the class scores: the last Linear, or the last Conv2d (SqueezeNet)."""
    get = getattr(model, "get_classifier", None)
    if get is not None and isinstance(get(), nn.Linear | nn.Conv2d):
        return get()  # type: ignore[no-any-return]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]


@torch.no_grad()
def randomize(model: nn.Module, size: int, seed: int = 0) -> nn.Module:
    """Seeded random BatchNorm affines, BatchNorm statistics calibrated on random images, a spread
    classifier; returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for bn in norms:
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.2)
    if norms:
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the calibration batches
        model.train()
        for _ in range(_CALIBRATION_BATCHES):
            model(torch.rand(_CALIBRATION_BATCH_SIZE, 3, size, size, generator=gen))
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
    head = _classifier(model)
    fan_in = head.weight[0].numel()
    head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * (4.0 / fan_in) ** 0.5)
    if head.bias is not None:
        head.bias.zero_()
    return model.eval()
