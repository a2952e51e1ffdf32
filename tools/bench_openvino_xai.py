"""The peer's cost on any IR: openvino-xai's Recipro-CAM inserted into a plain IR, timed beside it and beside
ovxai's patched IRs, in the peer's own venv and OpenVINO (``tools/peer.py`` does the work).

``--plain`` is an IR with a dynamic batch; ``--target`` a node's friendly name or one of its output tensor names
(default: openvino-xai's own choice); every ``--extra NAME=PATH`` IR (e.g. ovxai's patched models) is timed in the
same rounds, on the same OpenVINO. Batch 1 (the only batch the peer's branch takes), alternated rounds, medians
and paired ratios to plain, in each ``--precisions``; IR sizes, added constants, peak RSS. The benchmarks that
compare with the peer call the same code through their ``--peer``: bench_latency.py (ResNet-50), bench_vit.py
(ViT-B/16), bench_shortcut.py (models without a global pool).

    .venv/bin/python tools/bench_openvino_xai.py --plain out/plain.xml --target TENSOR --extra fast=out/fast.xml
    .venv/bin/python tools/bench_openvino_xai.py --plain out/plain.xml --quick
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import peer
from tools.engines import PRECISIONS
from tools.harness import MAX_LOST_SHARE


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plain", type=Path, required=True, help="plain IR (.xml) with a dynamic batch")
    p.add_argument("--target", help="node friendly name or tensor name to hook (default: openvino-xai's choice)")
    p.add_argument("--method", choices=peer.METHODS, default="reciprocam", help="vit_reciprocam for transformers")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=PATH", help="more IRs to time alongside")
    p.add_argument("--workdir", type=Path, help="where to write openvino_xai.xml (default: beside --plain)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["default"])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=60.0, help="cap on the timed seconds per precision")
    p.add_argument("--max-wait-share", type=float, default=MAX_LOST_SHARE, help="see bench_latency.py --help")
    p.add_argument("--wait-quiet", type=float, default=60.0, help="see bench_latency.py --help")
    p.add_argument("--no-rss", action="store_true")
    p.add_argument("--python", help="the peer's python (default: .venv-xai's, created if missing)")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds, 1 warm-up, no quiet wait")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.wait_quiet, args.budget_s = 3, 1, 0.0, 10.0
    for item in args.extra:
        if "=" not in item:
            p.error(f"--extra {item}: write NAME=PATH")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    request = peer.Request(
        str(args.plain.resolve()), str((args.workdir or args.plain.parent).resolve()), method=args.method,
        target=args.target, extras=dict(item.split("=", 1) for item in args.extra), precisions=args.precisions,
        rounds=args.rounds, warmup=args.warmup, budget_s=args.budget_s, quiet_wait_s=args.wait_quiet,
        max_lost_share=args.max_wait_share, rss=not args.no_rss,
    )  # fmt: skip
    report = peer.run(request, peer.python(args.python))
    print(peer.table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    if "error" in report:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
