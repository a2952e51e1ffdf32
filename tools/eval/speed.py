"""Speed only, on a ResNet-50-shaped network with random weights (its maps mean nothing): per-image latency
of Recipro-CAM through ovxai (OpenVINO) against plain OpenVINO inference, and of Grad-CAM and Score-CAM
(torchcam) against a plain torch forward; each call is timed between two plain inferences of the same
runtime (``timing.Timer``), in rotating rounds, in one process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tools.eval.methods import OVClassifier, ReciproCAM, TorchCAM, to_onnx, to_torch
from tools.eval.timing import Timer

LAYER = "layer4"
CHANNELS = 2048
SAMPLED = 256


def resnet50_speed(workdir: Path, rounds: int, scorecam: str, seed: int) -> list[dict[str, Any]]:
    """Rows {name, runtime, ms, ratio, note}. ``scorecam`` is 'full' (one real call), 'sampled' (a real call
    restricted to the first 256 of the 2048 channels, time x 8: Score-CAM's cost is one forward per
    channel) or 'skip'."""
    from torchcam.methods import GradCAM, ScoreCAM

    from models import architectures as arch
    from ovxai import HookOptions, export

    workdir.mkdir(parents=True, exist_ok=True)
    net = arch.randomize(arch.resnet50(), seed=seed).eval()
    onnx_path = to_onnx(net, workdir / "resnet50.onnx", 224, exporter="legacy")
    plain = OVClassifier(onnx_path, batch=1)
    recipro = []
    for mask in ("onehot", "gaussian"):
        xml = workdir / f"resnet50_xai_{mask}.xml"
        result = export(onnx_path, xml, layer=LAYER, options=HookOptions(mask=mask), fp16=False)
        recipro.append(ReciproCAM(f"Recipro-CAM ({mask})", result.files[0]))
    tnet = net.to(memory_format=torch.channels_last)
    gradcam = TorchCAM("Grad-CAM", tnet, lambda m: GradCAM(m, LAYER), gradient=True)

    x = np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)
    cls = int(np.argmax(plain.logits(x)[0]))

    def torch_forward(x: np.ndarray) -> None:
        with torch.inference_mode():
            tnet(to_torch(x))

    timer = Timer({"OpenVINO": plain.logits, "torch": torch_forward})
    jobs: list[tuple[str, str, Callable[[], Any]]] = [
        *((r.name, "OpenVINO", lambda r=r: r.explain(x, cls)) for r in recipro),
        ("Grad-CAM", "torch", lambda: gradcam.explain(x, cls)),
    ]
    for _, _, fn in jobs:  # warm-up
        fn()
    for r in tqdm(range(rounds), desc="ResNet-50 speed", unit="round"):
        for name, runtime, fn in jobs[r % len(jobs) :] + jobs[: r % len(jobs)]:
            timer.call(name, runtime, fn, x)
    order = ["plain OpenVINO", *(r.name for r in recipro), "plain torch", "Grad-CAM"]
    runtime = {"plain torch": "torch", "Grad-CAM": "torch"}
    rows = [
        {"name": k, "runtime": runtime.get(k, "OpenVINO"), **timer.summary(k), "note": f"{rounds} paired rounds"}
        for k in order
    ]
    if scorecam != "skip":
        kwargs: dict[str, Any] = {"batch_size": 16}
        if scorecam == "sampled":
            kwargs["reshape_transform"] = lambda a: a[:, :SAMPLED]
        sc = TorchCAM("Score-CAM", tnet, lambda m: ScoreCAM(m, LAYER, **kwargs), gradient=False)
        with tqdm(total=1, desc=f"ResNet-50 Score-CAM ({scorecam})", unit="call") as bar:
            timer.call("Score-CAM", "torch", lambda: sc.explain(x, cls), x)
            bar.update()
        factor = CHANNELS / SAMPLED if scorecam == "sampled" else 1.0
        summary = timer.summary("Score-CAM")
        note = "1 call" if scorecam == "full" else f"1 call on {SAMPLED} of {CHANNELS} channels, x{factor:.0f}"
        rows.append({"name": "Score-CAM", "runtime": "torch", "ms": summary["ms"] * factor,
                     "ratio": summary["ratio"] * factor, "calls": 1, "note": note})  # fmt: skip
    return rows
