"""Throughput and overheads of the thin runtime (``ovxai.runtime.Explainer``) on CPU.

What it measures (a hand-run benchmark, not a test):

1. **Throughput** (images/s) of a folder workload: the 4 photos in ``samples/photos`` cycled to
   ``--images`` images, given either as pre-decoded PIL images (``pil``: no disk or JPEG cost) or as
   paths (``path``: what ``ovxai explain folder/`` pays). Modes: sync one-by-one (``explain(img)`` per
   image), sync batched (``explain(batch_of_8)``) and async streaming (``explain_many(jobs=1, 2, 4)``).
   Engines: EfficientNet-Lite0 (real weights) on OpenVINO and ONNX Runtime, and a ResNet-50-shaped
   random net on OpenVINO (``--resnet-images``, fewer images since it is several times slower), each OpenVINO
   model both at the runtime's default f32 and with ``config={}`` (the plugin's default precision,
   bf16 on CPUs with native bf16).
2. **Per-image latency breakdown** at 224 px, batch 1, from paths: the runtime's own ``timings``
   (load = open + JPEG decode, preprocess, inference, postprocess), the wall time of ``explain()``, and,
   timed here, the first access of ``.upsampled`` (bilinear upsampling of the maps to the photo's size)
   and ``.overlay(0)`` (colour map + blend, after ``.upsampled`` is cached). The target: post-processing
   (postprocess + upsampled) under 10 % of inference.
3. **Precision**: the ``INFERENCE_PRECISION_HINT`` each compiled OpenVINO model actually uses.
4. **Pictures** (``--pictures N``, default 64): ``ovxai explain`` (in process, ``cli.main``) on a folder of N
   photos at 512 px with an overlay per image, in each ``--overlay-format`` (jpeg, the default over a photo;
   png; webp), and the way it worked before (LATENCY hint, overlays drawn and saved as Pillow PNGs at zlib's
   default level, one after the other, by the thread that feeds the engine), against the engine's own
   throughput on the same images at its best setting (prepared tensors through ``infer_many``: OpenVINO's
   LATENCY and THROUGHPUT hints, batches of 1, 2 and 8, 1 to 4 requests in flight), and ``explain_many``
   without pictures (what the overlays cost on top); EfficientNet-Lite0, OpenVINO f32 (the runtime's
   default, which ``ovxai explain`` uses). The target: the command at >= 0.5x the engine's best. Then what
   one picture costs a server (``/v1/explain?format=``): ``pictures.encode(result.overlay(0), format)`` at
   224, 512 and 1024 px, one thread, beside Pillow's PNG encoder at levels 1 and 6.

If the post-processing target is missed (or with ``--profile``), the non-inference path (load,
preprocess, postprocess, upsampled, overlay, with inference replaced by stored outputs) is run under
cProfile and the hot spots are printed.

Noise: the machine may be shared. Both parts are timed by ``tools/harness.py``: every round runs all
configurations (throughput) or engines (latency) once, in a rotating order, so drift hits all alike;
rounds in which a run lost over 2 % of its time to other processes are repeated (the tables say how
many were clean); tables give medians over the used rounds with (min-max), and the "others" column is
the share of all CPUs that other processes used while that configuration ran. Before each part the
script waits up to ``--quiet-wait`` seconds for a quiet machine.

Models are exported once into ``--workdir`` (reused on later runs; ``--rebuild`` to redo). Run from
the repository root::

    .venv/bin/python tools/bench_runtime.py                 # default: 64 images, 3 rounds (~3 min; +1 min first export)
    .venv/bin/python tools/bench_runtime.py --quick         # smoke run (~1 min)
    .venv/bin/python tools/bench_runtime.py --images 128 --rounds 5 --json bench_runtime.json
    .venv/bin/python tools/bench_runtime.py --only-pictures --rounds 5   # part 4 only (~2 min)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import Timing, Variant, alternate, markdown_table, spread  # noqa: E402 - tools/ is the script's folder

from ovxai.runtime import Explainer, Explanation, pictures  # noqa: E402 - needs the repository root on sys.path

PHOTOS = ROOT / "samples" / "photos"
LABELS = ROOT / "models" / "imagenet1k_labels.txt"
EFFNET_ONNX = ROOT / "out" / "efficientnet_lite0.onnx"
IMAGENET_MEAN, IMAGENET_SCALE = "123.675,116.28,103.53", "58.395,57.12,57.375"
BATCH = 8
JOBS = (1, 2, 4)
MODES = ("sync x1", f"sync x{BATCH}", *(f"async j{j}" for j in JOBS))
TARGET_SHARE = 0.10  # post-processing / inference


# ------------------------------------------------------------------------------------------- models


def build_models(workdir: Path, rebuild: bool) -> dict[str, Path]:
    """The patched models: EfficientNet-Lite0 (.xml for OpenVINO, .onnx for ONNX Runtime), ResNet-50 (.xml)."""
    from ovxai import export
    from ovxai.metadata import ModelInfo

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "effnet_xml": workdir / "efficientnet_lite0_xai.xml",
        "effnet_onnx": workdir / "efficientnet_lite0_xai.onnx",
        "resnet_xml": workdir / "resnet50_xai.xml",
    }
    if not rebuild and all(p.is_file() for p in paths.values()):
        print(f"reusing the models in {workdir} (--rebuild to export them again)", file=sys.stderr)
        return paths
    if not EFFNET_ONNX.is_file():
        print(f"building {EFFNET_ONNX} ...", file=sys.stderr)
        script = ROOT / "models" / "build.py"
        subprocess.run([sys.executable, str(script), "efficientnet_lite0", str(EFFNET_ONNX)], check=True, cwd=ROOT)
    effnet_info = ModelInfo.from_options(LABELS, "127", "128", channel_order="rgb")
    for key in ("effnet_xml", "effnet_onnx"):
        print(f"exporting {paths[key].name} ...", file=sys.stderr)
        export(EFFNET_ONNX, paths[key], info=effnet_info)

    from models import architectures as arch
    from ovxai.exporter.from_torch import to_onnx

    print("exporting a random-weight ResNet-50 ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ovxai-bench-") as scratch:
        plain = to_onnx(arch.randomize(arch.resnet50()), Path(scratch) / "resnet50.onnx", 224, exporter="legacy")
        resnet_info = ModelInfo.from_options(None, IMAGENET_MEAN, IMAGENET_SCALE, channel_order="rgb")
        export(plain, paths["resnet_xml"], info=resnet_info)
    return paths


@dataclass
class Engine:
    name: str  # e.g. "EffNet-Lite0 openvino f32"
    explainer: Explainer
    precision: str
    images: int  # workload size for the throughput runs
    forms: tuple[str, ...]  # "pil" and/or "path"


def precision_of(explainer: Explainer) -> str:
    compiled = getattr(explainer.session, "compiled", None)
    if compiled is None:
        return "f32 (ORT)"
    return str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")


def load_engines(paths: dict[str, Path], images: int, resnet_images: int) -> list[Engine]:
    specs: list[tuple[str, Path, str, dict[str, Any] | None, int, tuple[str, ...]]] = [
        ("EffNet-Lite0 openvino", paths["effnet_xml"], "openvino", None, images, ("pil", "path")),
        ("EffNet-Lite0 openvino", paths["effnet_xml"], "openvino", {}, images, ("pil",)),
        ("EffNet-Lite0 onnxruntime", paths["effnet_onnx"], "onnxruntime", None, images, ("pil", "path")),
        ("ResNet-50 openvino", paths["resnet_xml"], "openvino", None, resnet_images, ("pil",)),
        ("ResNet-50 openvino", paths["resnet_xml"], "openvino", {}, resnet_images, ("pil",)),
    ]
    engines = []
    for name, path, backend, config, n, forms in specs:
        explainer = Explainer.load(path, backend=backend, device="CPU", config=config)
        precision = precision_of(explainer)
        label = f"{name} {precision}" + (" (config={})" if config == {} else "")
        engines.append(Engine(label, explainer, precision, n, forms))
    return engines


# --------------------------------------------------------------------------------------- throughput


def workload(n: int, form: str, photos: list[Path], decoded: list[Image.Image]) -> list[Any]:
    source: Sequence[Any] = photos if form == "path" else decoded
    return [source[i % len(source)] for i in range(n)]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_mode(explainer: Explainer, mode: str, items: list[Any]) -> None:
    if mode == "sync x1":
        for item in items:
            explainer.explain(item)
    elif mode.startswith("sync x"):
        for chunk in _chunks(items, int(mode.removeprefix("sync x"))):
            explainer.explain(chunk)
    else:
        for _ in explainer.explain_many(items, jobs=int(mode.removeprefix("async j"))):
            pass


def config_name(engine: Engine, form: str, mode: str) -> str:
    return f"{engine.name} | {form} | {mode}"


def bench_throughput(
    engines: list[Engine], photos: list[Path], decoded: list[Image.Image], rounds: int, quiet_wait: float
) -> Timing:
    """Every (engine, input form, mode) is a variant of ``harness.alternate``; one run = the whole workload."""
    variants = []
    for engine in engines:
        for form in engine.forms:
            items = workload(engine.images, form, photos, decoded)
            for mode in MODES:  # warm-up on a short workload: dynamic shapes for batch 1 and 8, async queues
                run_mode(engine.explainer, mode, workload(BATCH, form, photos, decoded))
                run = partial(run_mode, engine.explainer, mode, items)
                variants.append(Variant(config_name(engine, form, mode), run))

    def progress(run: int, clean: int, wanted: int) -> None:
        print(f"throughput round {run}: {clean}/{wanted} clean", file=sys.stderr, flush=True)

    return alternate(variants, rounds, warmup=0, quiet_wait_s=quiet_wait, progress=progress)


def throughput_table(engines: list[Engine], timing: Timing) -> str:
    rows = []
    for engine in engines:
        for form in engine.forms:
            cells, others = [], []
            for mode in MODES:
                name = config_name(engine, form, mode)
                cells.append(spread([engine.images / s for s in timing.seconds(name)]))
                others += [r[name].load.others_share for r in timing.used]
            rows.append([engine.name, form, engine.images, *cells, f"{statistics.median(others):.0%}"])
    header = ["engine", "input", "n", *MODES, "others' CPU"]
    return markdown_table(header, rows, "llr" + "r" * len(MODES) + "r") + f"\n\n{timing.verdict()}"


# ------------------------------------------------------------------------------------------ latency

STAGES = ("load", "preprocess", "inference", "postprocess", "upsampled", "overlay", "explain()")


def explain_one(explainer: Explainer, path: Path) -> dict[str, float]:
    """Seconds per stage for one photo at batch 1, from its path."""
    start = time.perf_counter()
    result = explainer.explain(path)[0]
    wall = time.perf_counter() - start
    start = time.perf_counter()
    _ = result.upsampled
    upsampled = time.perf_counter() - start
    start = time.perf_counter()
    result.overlay(0)
    overlay = time.perf_counter() - start
    return {**result.timings, "upsampled": upsampled, "overlay": overlay, "explain()": wall}


def explain_photos(explainer: Explainer, photos: list[Path]) -> list[dict[str, float]]:
    return [explain_one(explainer, path) for path in photos]


Stages = dict[str, dict[str, list[float]]]  # engine -> stage -> seconds, one per photo and used round


def bench_latency(engines: list[Engine], photos: list[Path], rounds: int, quiet_wait: float) -> tuple[Stages, Timing]:
    """One run = every photo explained once by one engine; a warm-up round first."""
    variants = [Variant(e.name, partial(explain_photos, e.explainer, photos)) for e in engines]
    timing = alternate(variants, rounds, warmup=1, quiet_wait_s=quiet_wait)
    samples: Stages = {e.name: defaultdict(list) for e in engines}
    for name in timing.names:
        for per_photo in timing.values(name):
            for stages in per_photo:
                for stage, seconds in stages.items():
                    samples[name][stage].append(seconds)
    return samples, timing


def post_share(stages: dict[str, list[float]]) -> float:
    """(postprocess + upsampled) / inference, from the medians."""
    med = {k: statistics.median(v) for k, v in stages.items()}
    return (med["postprocess"] + med["upsampled"]) / med["inference"]


def latency_table(samples: Stages) -> str:
    rows = []
    for name, stages in samples.items():
        cells = [f"{statistics.median(stages[s]) * 1e3:.2f}" for s in STAGES]
        share = post_share(stages)
        mark = "ok" if share < TARGET_SHARE else "MISSED"
        drawn = share + statistics.median(stages["overlay"]) / statistics.median(stages["inference"])
        rows.append([name, *cells, f"{share:.1%} ({mark})", f"{drawn:.0%}"])
    header = ["engine", *STAGES, "post % of inference", "with overlay"]
    return markdown_table(header, rows, "l" + "r" * (len(STAGES) + 2))


# ------------------------------------------------------------------------------------------ profile


def profile_post(explainer: Explainer, photos: list[Path], repeats: int, top: int) -> str:
    """cProfile of everything but inference (load, preprocess, postprocess, upsampled, overlay) at batch 1."""
    stored = []
    for path in photos:  # inference once per photo, outside the profile
        stored.append(explainer.infer(explainer.prepare(path)))

    def work() -> None:
        for _ in range(repeats):
            for path, outputs in zip(photos, stored, strict=True):
                batch = explainer.prepare(path)
                result: Explanation = explainer.postprocess(batch, outputs, "top1", 5)[0]
                _ = result.upsampled
                result.overlay(0)

    work()  # warm caches
    profiler = cProfile.Profile()
    profiler.runcall(work)
    stats = pstats.Stats(profiler)
    images = repeats * len(photos)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    lines = [
        f"cProfile, {images} images, non-inference path only; own time total {total / images * 1e3:.2f} ms/image",
        "",
        "| function | calls/image | own µs/image | cumulative µs/image | main callers (µs/image) |",
        "|---|---:|---:|---:|---|",
    ]
    for key, (_cc, calls, own, cum, callers) in rows:
        by_time = sorted(callers.items(), key=lambda kv: kv[1][3], reverse=True)[:2]
        origin = ", ".join(f"`{_where(k)}` {v[3] / images * 1e6:.0f}" for k, v in by_time)
        lines.append(
            f"| `{_where(key)}` | {calls / images:g} | {own / images * 1e6:.0f} | {cum / images * 1e6:.0f} | {origin} |"
        )
    return "\n".join(lines)


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    return f"{Path(file).name}:{line} {func}" if line else func


# ------------------------------------------------------------------------------------------ pictures

PICTURE_SIZE = 512  # the long side of the photos ``ovxai explain`` runs on
# (OpenVINO performance hint, images per request, requests in flight)
ENGINE_CONFIGS = (("latency", 1, 1), ("latency", 1, 2), ("latency", 8, 1), ("latency", 8, 2),
                  ("throughput", 1, 2), ("throughput", 1, 4), ("throughput", 2, 4), ("throughput", 8, 4))  # fmt: skip
COMMANDS = ("jpeg", "png", "webp", "before: PNG level 6, serial")
SERVER_SIZES = (224, 512, 1024)


def picture_folder(workdir: Path, count: int) -> Path:
    """``count`` JPEG photos (the samples, cycled) at PICTURE_SIZE px on the long side."""
    folder = workdir / f"photos{PICTURE_SIZE}x{count}"
    if len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(PHOTOS.glob("*.jpg"))
    for i in range(count):
        image = Image.open(photos[i % len(photos)]).convert("RGB")
        image.thumbnail((PICTURE_SIZE, PICTURE_SIZE))
        image.save(folder / f"p{i:03}.jpg", quality=90)
    return folder


def engine_run(explainer: Explainer, tensors: list[Any], batch: int, jobs: int) -> None:
    """The engine alone: prepared tensors, ``batch`` images a request, ``jobs`` requests in flight."""
    import numpy as np

    batches = ((i, np.stack(tensors[i : i + batch])) for i in range(0, len(tensors), batch))
    for _ in explainer.session.infer_many(batches, jobs):
        pass


def command_run(model: Path, folder: Path, out: Path, form: str) -> float:
    """``ovxai explain`` in this process, its per-image lines discarded; the images/s it reports (from its
    first image on: without loading the model)."""
    import contextlib
    import io

    from ovxai.cli import main as ovxai

    with contextlib.redirect_stdout(io.StringIO()):
        code = ovxai(["explain", "-m", str(model), "-i", str(folder), "-o", str(out), "--overlay-format", form])
    if code != 0:
        raise SystemExit(f"ovxai explain exited {code}")
    return float(json.loads((out / "summary.json").read_text())["images_per_second"])


def stream_run(model: Path, folder: Path) -> float:
    """The command's work without its pictures: the model loaded, every photo decoded, preprocessed,
    inferred and postprocessed by ``explain_many`` (2 requests in flight); the images/s from the first image."""
    explainer = Explainer.load(model, throughput=True)  # as ovxai explain loads it
    start = time.perf_counter()
    count = sum(1 for _ in explainer.explain_many(sorted(folder.glob("*.jpg")), "top1", 5, jobs=2))
    return count / (time.perf_counter() - start)


def before_run(model: Path, folder: Path, out: Path) -> float:
    """What ``ovxai explain`` did before: the model loaded, then overlays drawn and saved (Pillow PNG, zlib
    level 6) by the thread that hands the engine its images, so that the engine waits while they are
    written; the images/s from the first image on."""
    explainer = Explainer.load(model)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    count = 0
    for result in explainer.explain_many(sorted(folder.glob("*.jpg")), "top1", 5, jobs=2):
        for i, target in enumerate(result.targets):
            result.overlay(i).save(out / f"{Path(result.source).stem}_{target.class_id}.png")
        count += 1
    return count / (time.perf_counter() - start)


def bench_pictures(model: Path, folder: Path, rounds: int, quiet_wait: float) -> Timing:
    import shutil

    explainers = {hint: Explainer.load(model, throughput=hint == "throughput") for hint in ("latency", "throughput")}
    photos = sorted(folder.glob("*.jpg"))
    tensors = [explainers["latency"].prepare(p).tensor[0] for p in photos]
    scratch = Path(tempfile.mkdtemp(prefix="ovxai-bench-pictures-"))

    def fresh(out: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(out, ignore_errors=True)

    variants = [
        Variant(f"engine {hint} b{b} j{j}", partial(engine_run, explainers[hint], tensors, b, j))
        for hint, b, j in ENGINE_CONFIGS
    ]
    variants.append(Variant("explain_many, no pictures", partial(stream_run, model, folder)))
    for form in COMMANDS[:3]:
        out = scratch / form
        variants.append(Variant(f"ovxai explain {form}", partial(command_run, model, folder, out, form), fresh(out)))
    out = scratch / "before"
    variants.append(Variant(f"ovxai explain {COMMANDS[3]}", partial(before_run, model, folder, out), fresh(out)))

    def progress(run: int, clean: int, wanted: int) -> None:
        print(f"pictures round {run}: {clean}/{wanted} clean", file=sys.stderr, flush=True)

    try:
        return alternate(variants, rounds, warmup=1, quiet_wait_s=quiet_wait, progress=progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pictures_table(timing: Timing, count: int) -> str:
    """Images/s of each variant, and each command's ratio to the engine's best configuration in the same round:
    from the command's start (model load included), and from its first image (the rate it reports)."""
    engines = [f"engine {hint} b{b} j{j}" for hint, b, j in ENGINE_CONFIGS]
    best = [max(count / r[name].seconds for name in engines) for r in timing.used]

    def ratio(rates: list[float]) -> str:
        ratios = [rate / b for rate, b in zip(rates, best, strict=True)]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"

    rows = []
    for name in timing.names:
        wall = [count / s for s in timing.seconds(name)]
        others = f"{statistics.median(r[name].load.others_share for r in timing.used):.0%}"
        if name in engines:
            rows.append([name, spread(wall), "", "", "", others])
        else:
            streamed = [float(v) for v in timing.values(name)]
            rows.append([name, spread(wall), ratio(wall), spread(streamed), ratio(streamed), others])
    header = ["what", "images/s", "x engine's best", "images/s from 1st image", "x engine's best", "others' CPU"]
    best_name = max(engines, key=lambda n: statistics.median(count / s for s in timing.seconds(n)))
    return markdown_table(header, rows, "lrrrrr") + f"\n\nengine's best: {best_name}\n\n{timing.verdict()}"


def _pillow_png(level: int, picture: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": partial(pictures.encode, format="png"),
    "jpeg": partial(pictures.encode, format="jpeg"),
    "webp": partial(pictures.encode, format="webp"),
    "Pillow PNG level 1": partial(_pillow_png, 1),
    "Pillow PNG level 6": partial(_pillow_png, 6),
}


def server_costs(model: Path, repeats: int) -> str:
    """ms per request of drawing one overlay and of encoding it, at several photo sizes, one thread: the
    median wall time and the median CPU time of this thread (what contention from other processes does not
    inflate)."""
    explainer = Explainer.load(model)
    photo = Image.open(sorted(PHOTOS.glob("*.jpg"))[0]).convert("RGB")
    rows = []
    for size in SERVER_SIZES:
        image = photo.resize((size, round(size * photo.height / photo.width)))
        result = explainer.explain(image)[0]
        cells = [_median_ms(partial(result.overlay, 0), repeats)]
        picture = result.overlay(0)
        for encode in ENCODERS.values():
            cells.append(f"{_median_ms(partial(encode, picture), repeats)} ({len(encode(picture)) // 1024} KiB)")
        rows.append([f"{image.width} x {image.height}", *cells])
    header = ["photo", "overlay", *(f"encode {name}" for name in ENCODERS)]
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def _median_ms(call: Callable[[], object], repeats: int) -> str:
    """'wall / CPU' ms, medians over ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call()
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return f"{statistics.median(wall) * 1e3:.2f} / {statistics.median(cpu) * 1e3:.2f}"


# --------------------------------------------------------------------------------------------- main


def environment(engines: list[Engine]) -> str:
    import numpy
    import onnxruntime
    import openvino

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} logical cores; python {platform.python_version()}, "
        f"openvino {openvino.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}",
    ]
    for engine in engines:
        compiled = getattr(engine.explainer.session, "compiled", None)
        if compiled is not None:
            props = {p: compiled.get_property(p) for p in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")}
            lines.append(
                f"- {engine.name}: INFERENCE_PRECISION_HINT={engine.precision}, "
                + ", ".join(f"{k}={v}" for k, v in props.items())
            )
    return "\n".join(lines)


def run_pictures(args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, Any]:
    model = paths["effnet_xml"]
    folder = picture_folder(args.workdir, args.pictures)
    timing = bench_pictures(model, folder, args.rounds, args.quiet_wait)
    print(f"### ovxai explain with overlays: {args.pictures} photos at {PICTURE_SIZE} px, EfficientNet-Lite0 "
          f"OpenVINO f32; median (min-max) over {len(timing.used)} round(s)\n")  # fmt: skip
    print(pictures_table(timing, args.pictures) + "\n")
    print("### One overlay for a server: draw, encode; ms wall / ms CPU (size), medians of 30, one thread\n")
    print(server_costs(model, 30) + "\n")
    return timing.report() | {"seconds": {name: timing.seconds(name) for name in timing.names}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images per throughput run (default 64)")
    parser.add_argument("--resnet-images", type=int, help="images per ResNet-50 throughput run (default images/2)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (default 3)")
    parser.add_argument("--latency-rounds", type=int, default=12, help="latency rounds, 4 photos each (default 12)")
    parser.add_argument("--quick", action="store_true", help="16 images, 1 round, 3 latency rounds")
    parser.add_argument(
        "--quiet-wait", type=float, default=5.0, help="max seconds to wait for a quiet machine before each part"
    )
    parser.add_argument("--profile", action="store_true", help="profile post-processing even if the target is met")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ovxai-bench-runtime")
    parser.add_argument("--rebuild", action="store_true", help="export the models again")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--pictures", type=int, default=64, help="photos in the pictures part (default 64; 0: skip)")
    parser.add_argument("--only-pictures", action="store_true", help="run the pictures part only")
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.latency_rounds, args.quiet_wait = 16, 1, 3, 0.0
    args.resnet_images = args.resnet_images or max(BATCH, args.images // 2)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    paths = build_models(args.workdir, args.rebuild)
    photos = sorted(PHOTOS.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos in {PHOTOS}")
    decoded = [Image.open(p).convert("RGB") for p in photos]
    if args.only_pictures:
        print("## Runtime benchmark: pictures\n")
        report = {"pictures": run_pictures(args, paths)}
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
        return
    engines = load_engines(paths, args.images, args.resnet_images)
    print("## Runtime benchmark\n")
    print(environment(engines) + "\n")
    print(f"photos: {', '.join(f'{p.name} {im.width}x{im.height}' for p, im in zip(photos, decoded, strict=True))}\n")

    report: dict[str, Any] = {}
    if not args.skip_throughput:
        throughput = bench_throughput(engines, photos, decoded, args.rounds, args.quiet_wait)
        print(f"### Throughput, images/s: median (min-max) over {len(throughput.used)} round(s)\n")
        print(throughput_table(engines, throughput) + "\n")
        report["throughput"] = throughput.report() | {
            "seconds": {name: throughput.seconds(name) for name in throughput.names}
        }

    latency, latency_timing = bench_latency(engines, photos, args.latency_rounds, args.quiet_wait)
    count = len(latency_timing.used) * len(photos)
    print(f"### Latency per image, 224 px input, batch 1, from paths: median ms over {count} runs\n")
    print(latency_table(latency) + "\n")
    print(latency_timing.verdict() + "\n")
    print(
        "load = open + decode; upsampled = first access of `.upsampled` (maps to the photo's size); overlay = "
        "`.overlay(0)` after that; explain() = wall time of the call; post % = (postprocess + upsampled) / inference; "
        "with overlay = (postprocess + upsampled + overlay) / inference\n"
    )
    report["latency"] = latency | {"timing": latency_timing.report()}

    missed = [e for e in engines if post_share(latency[e.name]) >= TARGET_SHARE]
    if missed or args.profile:
        if missed:
            print(f"post-processing over {TARGET_SHARE:.0%} of inference: {', '.join(e.name for e in missed)}\n")
        # the non-inference path does not depend on the engine: profile the runtime's default one
        print(f"### Where the non-inference time goes ({engines[0].name})\n")
        print(profile_post(engines[0].explainer, photos, repeats=25, top=18) + "\n")

    if args.pictures:
        report["pictures"] = run_pictures(args, paths)
    print(f"total time {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
