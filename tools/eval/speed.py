"""Speed only, on a ResNet-50-shaped network with random weights (its maps mean nothing): per-image latency
of Recipro-CAM through ovxai (OpenVINO) against plain OpenVINO inference, and of Grad-CAM and Score-CAM
(torchcam) against a plain torch forward, in one process, timed by ``tools/harness.py``: alternated rounds
(every method and both plain inferences once per round, in a rotating order, each call preceded by an
untimed plain inference of its runtime so that the other runtime's threads go idle), noisy rounds dropped,
and each method's ratio to plain = the median over rounds of its time / the plain inference of the same
runtime in the same round."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tools.eval.methods import OVClassifier, ReciproCAM, TorchCAM, to_torch
from tools.harness import Timing, Variant, alternate

LAYER = "layer4"
CHANNELS = 2048
SAMPLED = 256
BASELINE = {"OpenVINO": "plain OpenVINO", "torch": "plain torch"}


def rows_of(timing: Timing, runtime: dict[str, str], factor: float = 1.0) -> list[dict[str, Any]]:
    """{name, runtime, ms, ratio, calls, note} per variant; ``factor`` scales time and ratio (sampled Score-CAM)."""
    rows = []
    contended = ", contended: all used" if timing.contended else ""
    note = f"{timing.clean_count} clean of {len(timing.rounds)} alternated rounds{contended}"
    for name in timing.names:
        s = timing.summary(name, BASELINE[runtime[name]])
        ratio = (s.ratio or 1.0) * factor
        rows.append({"name": name, "runtime": runtime[name], "ms": s.median * 1e3 * factor, "ratio": ratio,
                     "calls": s.n, "note": note})  # fmt: skip
    return rows


def resnet50_speed(workdir: Path, rounds: int, scorecam: str, seed: int) -> list[dict[str, Any]]:
    """Rows {name, runtime, ms, ratio, calls, note}. ``scorecam`` is 'full' (one real call), 'sampled' (a real
    call restricted to the first 256 of the 2048 channels, time x 8: Score-CAM's cost is one forward per
    channel) or 'skip'."""
    from torchcam.methods import GradCAM, ScoreCAM

    from models import routes, zoo
    from ovxai import HookOptions, export

    workdir.mkdir(parents=True, exist_ok=True)
    net, size = zoo.build("resnet50", seed)
    onnx_path = routes.to_onnx(net, workdir / "resnet50.onnx", size, exporter="legacy")
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

    def plain_ov() -> None:
        plain.logits(x)

    def plain_torch() -> None:
        with torch.inference_mode():
            tnet(to_torch(x))

    variants = [
        Variant("plain OpenVINO", plain_ov, settle=plain_ov),
        *(Variant(r.name, partial(r.explain, x, cls), settle=plain_ov) for r in recipro),
        Variant("plain torch", plain_torch, settle=plain_torch),
        Variant("Grad-CAM", partial(gradcam.explain, x, cls), settle=plain_torch),
    ]
    runtime = {v.name: "torch" if v.settle is plain_torch else "OpenVINO" for v in variants}
    with tqdm(total=rounds, desc="ResNet-50 speed", unit="clean round") as bar:

        def progress(run: int, clean: int, wanted: int) -> None:
            bar.update(clean - bar.n)
            bar.set_postfix_str(f"{run} run")

        timing = alternate(variants, rounds, warmup=1, progress=progress)
    rows = rows_of(timing, runtime)
    if scorecam != "skip":
        kwargs: dict[str, Any] = {"batch_size": 16}
        if scorecam == "sampled":
            kwargs["reshape_transform"] = lambda a: a[:, :SAMPLED]
        sc = TorchCAM("Score-CAM", tnet, lambda m: ScoreCAM(m, LAYER, **kwargs), gradient=False)
        pair = [Variant("plain torch", plain_torch, settle=plain_torch),
                Variant("Score-CAM", partial(sc.explain, x, cls), settle=plain_torch)]  # fmt: skip
        with tqdm(total=1, desc=f"ResNet-50 Score-CAM ({scorecam})", unit="call") as bar:
            one = alternate(pair, 1, warmup=0, max_rounds=1)
            bar.update()
        factor = CHANNELS / SAMPLED if scorecam == "sampled" else 1.0
        row = rows_of(one, {"plain torch": "torch", "Score-CAM": "torch"}, factor)[1]
        row["note"] = "1 call" if scorecam == "full" else f"1 call on {SAMPLED} of {CHANNELS} channels, x{factor:.0f}"
        rows.append(row)
    return rows
