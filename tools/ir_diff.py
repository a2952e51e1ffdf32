"""What a patch added to an IR: its size on disk, the constants and the op types the plain model lacks.

Imports numpy and openvino only: the peer's venv (``tools/peer.py``) uses it on openvino-xai's IR.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

ConstKey = tuple[str, tuple[int, ...], int, str]  # element type, shape, bytes, sha1 of the content


def ir_size(xml: Path) -> int:
    """Bytes on disk of an IR: the .xml plus its .bin."""
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def _constants(model: ov.Model) -> Counter[ConstKey]:
    found: Counter[ConstKey] = Counter()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            data = np.ascontiguousarray(op.get_data())
            shape = tuple(int(d) for d in op.get_output_shape(0))
            digest = hashlib.sha1(data.tobytes()).hexdigest()
            found[(op.get_element_type().get_type_name(), shape, int(op.get_byte_size()), digest)] += 1
    return found


def added_constants(plain_xml: Path, patched_xml: Path) -> dict[str, Any]:
    """Constants in the patched model that the plain one lacks (by type, shape and content): their count,
    total bytes, and the largest one's bytes, type and shape."""
    core = ov.Core()
    added = _constants(core.read_model(os.fspath(patched_xml))) - _constants(core.read_model(os.fspath(plain_xml)))
    sizes = sorted(((nbytes, etype, list(shape)) for (etype, shape, nbytes, _), n in added.items() for _ in range(n)),
                   reverse=True)  # fmt: skip
    largest = sizes[0] if sizes else (0, "", [])
    return {
        "count": len(sizes),
        "total_bytes": sum(s[0] for s in sizes),
        "largest_bytes": largest[0],
        "largest_type": largest[1],
        "largest_shape": largest[2],
    }


def added_op_types(plain_xml: Path, patched_xml: Path) -> dict[str, int]:
    """Op types the patch added, by count (the saliency branch, including its copy of the tail)."""
    core = ov.Core()

    def count(xml: Path) -> Counter[str]:
        return Counter(op.get_type_name() for op in core.read_model(os.fspath(xml)).get_ordered_ops())

    return dict((count(patched_xml) - count(plain_xml)).most_common())


def static_info(models: Mapping[str, Path], plain: str = "plain") -> dict[str, dict[str, Any]]:
    """Per model: IR size and path, and for every model but ``plain`` what it adds to ``models[plain]``."""
    static: dict[str, dict[str, Any]] = {}
    for name, xml in models.items():
        static[name] = {"ir_bytes": ir_size(xml), "path": str(xml)}
        if name != plain:
            static[name]["added_constants"] = added_constants(models[plain], xml)
            static[name]["added_op_types"] = added_op_types(models[plain], xml)
    return static
