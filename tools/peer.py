"""openvino-xai, the peer, run one way: in its own venv, in a subprocess, on an IR this project wrote.

``openvino-xai`` 1.1.0 pins OpenVINO 2024.4 (through openvino-dev) and numpy 1, so it lives in ``.venv-xai`` at the
repository root (git-ignored), created by :func:`python` on first use (``pip install openvino-xai==1.1.0``, a
few minutes once). :func:`run` writes a :class:`Request` as JSON and runs this file with the peer's python; the
child inserts the peer's Recipro-CAM (``reciprocam``: ``insert_xai`` at a target node, CNNs) or ViT-ReciproCAM
(``vit_reciprocam``: raw scores, so that maps compare after one normalisation) into the plain IR, saves it as
``openvino_xai.xml`` (FP32 weights), optionally saves its f32 map of an image, and times the plain model, the
extra IRs (ovxai's patched ones: the same OpenVINO for all) and the peer's at batch 1 (the only batch its
branch takes) the way every benchmark times (``tools/engines.py``); IR sizes, added constants and peak RSS too.
The child prints one JSON line: the :func:`run`'s result.

The child imports numpy, openvino, openvino_xai and tools/{harness,engines,ir_diff}.py only (no torch, no ovxai).
Benchmarks take ``--peer [PYTHON]`` (:func:`add_argument`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the child, in the peer's venv
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.harness import MAX_LOST_SHARE, markdown_table

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-xai"
PIN = "openvino-xai==1.1.0"
NAME = "openvino_xai"  # the peer's model among the timed ones
METHODS = ("reciprocam", "vit_reciprocam")


@dataclass
class Request:
    """What the child does. ``plain``: an IR with a dynamic batch; ``target``: a node's friendly name or one of
    its output tensor names (None: the peer's own choice); ``extras``: name -> IR, timed alongside;
    ``image``: a .npy batch whose f32 map is saved as ``<workdir>/openvino_xai_map.npy``."""

    plain: str
    workdir: str
    method: str = "reciprocam"
    target: str | None = None
    mask: str = "gaussian"  # vit_reciprocam only (the peer's CNN Recipro-CAM has one mask)
    extras: dict[str, str] = field(default_factory=dict)
    precisions: list[str] = field(default_factory=lambda: ["default"])
    rounds: int = 30
    warmup: int = 3
    budget_s: float | None = None
    quiet_wait_s: float = 0.0
    max_rounds: int | None = None
    max_lost_share: float = MAX_LOST_SHARE
    rss: bool = True
    image: str | None = None


# ---------------------------------------------------------------------------------- parent (project venv)


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--peer [PYTHON]``: also run openvino-xai (in ``PYTHON``, default .venv-xai's, created if missing)."""
    parser.add_argument(
        "--peer", nargs="?", const="", metavar="PYTHON",
        help=f"also run openvino-xai ({PIN}) in its own venv: PYTHON, or {VENV.name}/bin/python (created if missing)",
    )  # fmt: skip


def python(explicit: str | None = None) -> str:
    """The peer's python: ``explicit``, else .venv-xai's, which is created on first use."""
    if explicit:
        return explicit
    executable = VENV / "bin" / "python"
    check = [str(executable), "-c", "import openvino_xai"]
    if executable.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(executable)
    print(f"creating {VENV} with {PIN} (once, a few minutes) ...", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(executable), "-m", "pip", "install", "-q", PIN], check=True)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"could not create the peer's venv ({exc}); by hand: python3 -m venv {VENV} && {executable} -m pip install "
            f"{PIN}, or pass the python of a venv that has it"
        ) from None
    return str(executable)


def run(request: Request, python_path: str) -> dict[str, Any]:
    """Run the peer as ``request`` says, in ``python_path``; its report, or ``{"error": ...}`` if it failed."""
    workdir = Path(request.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "peer_request.json"
    path.write_text(json.dumps(asdict(request), indent=2))
    proc = subprocess.run([python_path, str(Path(__file__).resolve()), str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"the peer's process failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def table(report: dict[str, Any]) -> str:
    """The peer's run as markdown: one row per model and precision."""
    if "error" in report:
        return f"openvino-xai failed: {report['error']}"
    head = (
        f"openvino-xai {report['openvino_xai']} on OpenVINO {report['openvino']} (its own venv and process; batch 1; "
        f"target '{report['target']}'; its saliency map: {report['saliency_map']})"
    )
    rows = []
    for t in report["timings"]:
        for name, s in t["variants"].items():
            static = report["models"][name]
            added = static.get("added_constants")
            largest = f"{added['largest_bytes']} B {added['largest_type']}{added['largest_shape']}" if added else "-"
            rss = report.get("rss", {}).get(name)
            rows.append((
                name, f"{t['precision']} ({s['precision']})", f"{t['rounds_clean']}/{t['rounds_run']}",
                f"{s['median_ms']:.2f}", f"{s['ratio']:.3f}", f"{static['ir_bytes'] / 2**20:.2f}", largest,
                f"{rss['peak_mib']:.1f}" if rss else "-",
            ))  # fmt: skip
    header = ("model", "precision (used)", "clean rounds", "median ms", "ratio to plain", "IR MiB",
              "largest added constant", "peak RSS MiB")  # fmt: skip
    errors = [f"{name}: does not run on this OpenVINO ({e})" for name, e in report.get("errors", {}).items()]
    return "\n\n".join([head, markdown_table(header, rows, "lllrrrlr"), *errors])


# ------------------------------------------------------------------------------------ child (peer's venv)


def _node(model: Any, target: str | None) -> str | None:
    """The friendly name of the node whose output is ``target`` (a friendly name or a tensor name)."""
    if target is None:
        return None
    for op in model.get_ordered_ops():
        if op.get_friendly_name() == target or any(target in out.get_names() for out in op.outputs()):
            return str(op.get_friendly_name())
    raise SystemExit(f"no node or tensor named '{target}' in the plain model")


def _insert(request: Request, model: Any) -> tuple[Any, str]:
    """The peer's patched model and the node it hooked."""
    import openvino_xai as xai

    if request.method == "vit_reciprocam":
        from openvino_xai.methods.white_box.recipro_cam import ViTReciproCAM

        node = _node(model, request.target)
        method = ViTReciproCAM(
            model, target_layer=node, embed_scaling=False, use_gaussian=request.mask == "gaussian",
            prepare_model=False,
        )  # fmt: skip
        return method.prepare_model(load_model=False), node or "(openvino-xai auto)"
    node = _node(model, request.target)
    patched = xai.insert_xai(
        model, task=xai.Task.CLASSIFICATION, explain_method=xai.Method.RECIPROCAM, target_layer=node
    )
    return patched, node or "(openvino-xai auto)"


def child(request: Request) -> dict[str, Any]:
    """Insert, save, map, time, measure (the module's docstring); errors of the peer itself are reported."""
    from importlib.metadata import version

    import numpy as np
    import openvino as ov

    from tools.engines import compile_models, peak_rss, time_models
    from tools.ir_diff import static_info

    workdir = Path(request.workdir)
    report: dict[str, Any] = {"openvino": ov.get_version(), "openvino_xai": version("openvino_xai"), "errors": {}}
    model = ov.Core().read_model(request.plain)
    start = time.perf_counter()
    try:
        patched, report["target"] = _insert(request, model)
    except Exception as exc:  # the peer's own types; the first line says what it found
        report["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        return report
    report["insert_s"] = time.perf_counter() - start
    saliency = next(o for o in patched.outputs if "saliency_map" in o.get_names())
    report["saliency_map"] = f"{saliency.get_element_type().get_type_name()} {saliency.get_partial_shape()}"
    xml = workdir / f"{NAME}.xml"
    ov.save_model(patched, os.fspath(xml), compress_to_fp16=False)
    print(f"inserted at {report['target']} in {report['insert_s']:.2f} s -> {xml}", file=sys.stderr, flush=True)
    if request.image:
        compiled = ov.Core().compile_model(patched, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        np.save(workdir / f"{NAME}_map.npy", np.asarray(compiled(np.load(request.image))["saliency_map"]))

    models = {"plain": Path(request.plain), **{k: Path(v) for k, v in request.extras.items()}, NAME: xml}
    for name in request.extras:  # ovxai's IRs may come from a newer OpenVINO: timed only if this one runs them
        try:
            ov.Core().compile_model(os.fspath(models[name]), "CPU")
        except RuntimeError as exc:
            report["errors"][name] = str(exc).strip().splitlines()[0]
            del models[name]
    report["models"] = static_info(models)
    shape = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    options: dict[str, Any] = {
        "warmup": request.warmup, "budget_s": request.budget_s, "quiet_wait_s": request.quiet_wait_s,
        "max_rounds": request.max_rounds, "max_lost_share": request.max_lost_share,
    }  # fmt: skip
    report["timings"] = []
    for precision in request.precisions:
        timed = time_models(compile_models(models, "openvino", precision), x, request.rounds, **options)
        report["timings"].append({"precision": precision, **timed})
        print(f"timed {precision}: {timed['verdict']}", file=sys.stderr, flush=True)
    precision = request.precisions[0]
    report["rss"] = {n: peak_rss(p, 1, "CPU", precision) for n, p in models.items()} if request.rss else {}
    return report


if __name__ == "__main__":
    try:
        import openvino_xai  # noqa: F401
    except ImportError as error:  # the usual mistake: the project's venv
        raise SystemExit(f"tools/peer.py runs in openvino-xai's venv ({error}); use a benchmark's --peer") from None
    print(json.dumps(child(Request(**json.loads(Path(sys.argv[1]).read_text())))))
