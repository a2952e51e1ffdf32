"""The competitor's cost: ``openvino-xai``'s Recipro-CAM inserted into the same plain IR, timed like ovxai's.

``openvino-xai`` (PyPI, 1.1.0) pins an older OpenVINO, so it lives in its own venv and this script runs
there; it needs only openvino, numpy and openvino_xai, and reuses the helpers of ``bench_latency.py``
and ``harness.py`` (which import nothing else at module level). Set the venv up once::

    python3 -m venv /tmp/oxai-venv && /tmp/oxai-venv/bin/pip install openvino-xai==1.1.0

What it does: reads ``--plain`` (an IR with a dynamic batch), inserts the white-box Recipro-CAM branch
at ``--target`` (a node's friendly name or one of its output tensor names; default: openvino-xai's own
choice), saves it as ``openvino_xai.xml`` (FP32 weights), then times batch 1 (openvino-xai's branch
reshapes to batch 1) with the plain model, every ``--extra NAME=PATH`` model (e.g. ovxai's patched IRs,
so that all run on the same OpenVINO) and openvino-xai's model alternated round by round (the same
``harness.alternate`` rounds and noise rule as ``bench_latency.py``), measures IR
sizes, added constants and the peak RSS of compile + one inference per model in child processes, and
prints everything as ONE JSON line on stdout (progress goes to stderr). Usually run by
``bench_latency.py --competitor-python /tmp/oxai-venv/bin/python``; by hand::

    /tmp/oxai-venv/bin/python tools/bench_openvino_xai.py --plain /tmp/x/plain.xml --extra fast=/tmp/x/fast.xml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import openvino as ov
from bench_latency import bench_batch, peak_rss, static_info
from harness import MAX_LOST_SHARE

try:
    import openvino_xai as xai
except ImportError as error:  # the usual mistake: running it with the project's venv
    raise SystemExit(
        f"bench_openvino_xai.py needs the openvino-xai package ({error}); it pins an older OpenVINO, so give it "
        "its own venv:\n    python3 -m venv /tmp/oxai-venv && /tmp/oxai-venv/bin/pip install openvino-xai==1.1.0\n"
        "then run bench_latency.py --competitor-python /tmp/oxai-venv/bin/python"
    ) from None

NAME = "openvino_xai"


def resolve_target(model: ov.Model, target: str | None) -> str | None:
    """The friendly name of the node whose output is ``target`` (a friendly name or a tensor name)."""
    if target is None:
        return None
    for op in model.get_ordered_ops():
        if op.get_friendly_name() == target or any(target in out.get_names() for out in op.outputs()):
            return str(op.get_friendly_name())
    raise SystemExit(f"no node or tensor named '{target}' in the plain model")


def insert(plain: Path, target: str | None, out: Path) -> dict[str, Any]:
    """Insert openvino-xai's Recipro-CAM branch and save the result as an FP32 IR."""
    model = ov.Core().read_model(str(plain))
    node = resolve_target(model, target)
    start = time.perf_counter()
    patched = xai.insert_xai(
        model, task=xai.Task.CLASSIFICATION, explain_method=xai.Method.RECIPROCAM, target_layer=node
    )
    seconds = time.perf_counter() - start
    ov.save_model(patched, str(out), compress_to_fp16=False)
    saliency = next(o for o in patched.outputs if "saliency_map" in o.get_names())
    return {
        "target": node or "(openvino-xai auto)",
        "insert_s": seconds,
        "saliency_map": f"{saliency.get_element_type().get_type_name()} {saliency.get_partial_shape()}",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plain", type=Path, required=True, help="plain IR (.xml) with a dynamic batch")
    p.add_argument("--target", help="node friendly name or tensor name to hook (default: openvino-xai's choice)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=PATH", help="more IRs to time alongside")
    p.add_argument("--workdir", type=Path, help="where to write openvino_xai.xml (default: beside --plain)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--budget-s", type=float, default=60.0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-wait-share", type=float, default=MAX_LOST_SHARE, help="see bench_latency.py --help")
    p.add_argument("--wait-quiet", type=float, default=60.0, help="see bench_latency.py --help")
    p.add_argument("--device", default="CPU")
    p.add_argument("--precision", choices=("default", "f32"), default="default")
    p.add_argument("--no-rss", action="store_true")
    p.add_argument("--json", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = args.workdir or args.plain.parent
    out = workdir / f"{NAME}.xml"
    info = insert(args.plain, args.target, out)
    print(f"inserted at {info['target']} in {info['insert_s']:.2f} s -> {out}", file=sys.stderr)

    models: dict[str, Path] = {"plain": args.plain}
    for item in args.extra:
        name, _, path = item.partition("=")
        models[name] = Path(path)
    models[NAME] = out

    static = static_info(models)

    latency = bench_batch(ov.Core(), models, 1, args)
    print(f"timed {latency['rounds']} rounds", file=sys.stderr)
    rss = (
        {}
        if args.no_rss
        else {n: peak_rss(sys.executable, x, 1, args.device, args.precision) for n, x in models.items()}
    )

    report = {
        "openvino": ov.get_version(),
        "openvino_xai": version("openvino_xai"),
        **info,
        "models": static,
        "latency": latency,
        "rss": rss,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
