"""The unit tier stays fast: none of its modules (nor ovxai's export and runtime sides) imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_the_unit_tier_imports_no_torch() -> None:
    modules = sorted(p.stem for p in HERE.glob("*.py") if p.stem != "test_tier")
    code = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import ovxai.exporter.pipeline, ovxai.cli, ovxai.runtime\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
