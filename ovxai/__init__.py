"""ovxai: CNN classifiers that explain themselves in production (Recipro-CAM inside the graph).

Names are imported lazily so that ``import ovxai.runtime`` never pulls in onnx or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ovxai.errors import OvxaiError
    from ovxai.exporter.from_torch import export_torch
    from ovxai.exporter.pipeline import ExportResult, export
    from ovxai.hook.options import HookOptions

__all__ = ["ExportResult", "HookOptions", "OvxaiError", "export", "export_torch"]
__version__ = "0.1.0"

_HOMES = {
    "ExportResult": "ovxai.exporter.pipeline",
    "export": "ovxai.exporter.pipeline",
    "HookOptions": "ovxai.hook.options",
    "OvxaiError": "ovxai.errors",
    "export_torch": "ovxai.exporter.from_torch",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ovxai' has no attribute {name!r}")
