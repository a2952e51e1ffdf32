"""Shared fixtures: small torch networks exported to ONNX once per session; the tiers' markers.

Tiers are folders: ``unit`` (hand-built graphs, numpy and the engines' own calls, no torch: seconds),
``integration`` (torch networks against the torch oracle, through both engines), ``e2e`` (the command line,
servers, Ray, the samples: subprocesses). Each test is marked with its tier; ``slow`` marks the heavy ones:
the whole e2e tier and the heavy integration cases. torch is imported only when a network is built.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ recipes


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)
        if tier == "e2e":
            item.add_marker("slow")


@pytest.fixture(autouse=True)
def _signal_stack_kept() -> object:
    """Tests compile with OpenVINO directly too: each ends with the thread's own signal stack back in place,
    so that a Core released later cannot leave a freed one under the signal tests' handlers
    (``ovxai.interrupts.keep_signal_stack`` says why)."""
    yield
    from ovxai.interrupts import keep_signal_stack

    keep_signal_stack()


def _arch() -> ModuleType:
    """The repo's model recipes (models/architectures.py), which need torch: skip the test without it."""
    pytest.importorskip("torch")
    from models import architectures

    return architectures


NETS: dict[str, tuple[Callable[[], torch.nn.Module], int]] = {
    # name: (factory, input size)
    "tiny": (lambda: _arch().TinyCNN(), 32),
    "resnet": (lambda: _arch().tiny_resnet(), 128),
    "vgg": (lambda: _arch().VGG(), 32),
    "effnet": (lambda: _arch().EfficientNetLiteStyle(), 32),
    "nhwc": (lambda: _arch().ChannelsLastHead(), 32),
    "mobilenet": (lambda: _arch().MobileNetV3(num_classes=10), 96),
}


def build_net(name: str) -> torch.nn.Module:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return _arch().randomize(NETS[name][0]())


def export_onnx(net: torch.nn.Module, size: int, path: Path, exporter: str, dynamic_size: bool = False) -> Path:
    from ovxai.exporter.from_torch import to_onnx

    return to_onnx(net, path, size, exporter, dynamic_size)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[torch.nn.Module, Path]]:
    """exported(name, exporter) -> (torch net, .onnx path), built once per session."""
    cache: dict[tuple[str, str, bool], tuple[torch.nn.Module, Path]] = {}
    folder = tmp_path_factory.mktemp("models")

    def get(name: str, exporter: str = "legacy", dynamic_size: bool = False) -> tuple[torch.nn.Module, Path]:
        key = (name, exporter, dynamic_size)
        if key not in cache:
            net = build_net(name)
            path = folder / f"{name}-{exporter}{'-any' if dynamic_size else ''}.onnx"
            cache[key] = (net, export_onnx(net, NETS[name][1], path, exporter, dynamic_size))
        return cache[key]

    return get


LABELS = tuple(f"thing {i}, kind {i}" for i in range(10))  # commas and spaces, like ImageNet's names
MEAN, SCALE = (120.0, 110.0, 100.0), (60.0, 60.0, 60.0)


@pytest.fixture(scope="session")
def patched(exported, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ResNet patched at layer4 as IR ('xml') and ONNX ('onnx') with labels and preprocessing
    (LABELS, MEAN, SCALE, RGB) inside, and as IR without them ('bare'). Built once per session."""
    from ovxai import export
    from ovxai.metadata import ModelInfo

    _, onnx_path = exported("resnet", "legacy")
    folder = tmp_path_factory.mktemp("patched")
    info = ModelInfo(LABELS, MEAN, SCALE, "rgb")
    models = {
        s: export(onnx_path, folder / f"resnet_xai.{s}", layer="layer4", fp16=False, info=info).files[0]
        for s in ("xml", "onnx")
    }
    models["bare"] = export(onnx_path, folder / "bare_xai.xml", layer="layer4", fp16=False).files[0]
    return models


def images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)
