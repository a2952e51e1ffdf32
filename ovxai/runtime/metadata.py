"""Read what ``ovxai export`` wrote into a model: labels and preprocessing. No onnx, no torch."""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

from ovxai.metadata import OVXAI_SECTION, SECTION, ModelInfo


def from_entries(entries: dict[str, str]) -> ModelInfo:
    """``{'model_info.labels': ..., 'ovxai.labels': ...}`` -> ModelInfo (verbatim labels preferred)."""

    def floats(key: str) -> tuple[float, ...] | None:
        text = entries.get(f"{SECTION}.{key}")
        return tuple(float(v) for v in text.split()) if text else None

    labels: tuple[str, ...] | None = None
    if f"{OVXAI_SECTION}.labels" in entries:
        labels = tuple(json.loads(entries[f"{OVXAI_SECTION}.labels"]))
    elif f"{SECTION}.labels" in entries:
        labels = tuple(label.replace("_", " ") for label in entries[f"{SECTION}.labels"].split())
    rgb = entries.get(f"{SECTION}.reverse_input_channels")
    return ModelInfo(
        labels, floats("mean_values"), floats("scale_values"), None if rgb is None else rgb in ("True", "YES")
    )


def from_openvino(model: Any) -> dict[str, str]:
    """rt_info of an ov.Model, flattened to 'section.key' strings."""
    entries: dict[str, str] = {}
    for section in (SECTION, OVXAI_SECTION):
        if not model.has_rt_info([section]):
            continue
        for key in model.get_rt_info([section]).astype(dict):
            entries[f"{section}.{key}"] = model.get_rt_info([section, key]).astype(str)
    return entries


def from_onnx_file(path: Path) -> dict[str, str]:
    """ONNX ``metadata_props`` read straight from the protobuf wire format, without the onnx package.

    ModelProto field 14 holds repeated StringStringEntryProto (key = 1, value = 2); every other
    top-level field, the graph and its weights included, is skipped by its length.
    """
    entries: dict[str, str] = {}
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for field, value in _fields(data, 0, len(data)):
            if field == 14 and isinstance(value, tuple):
                entry = {k: bytes(data[v[0] : v[1]]).decode("utf-8", "replace") for k, v in _fields(data, *value)
                         if isinstance(v, tuple)}  # fmt: skip
                if 1 in entry:
                    entries[entry[1]] = entry.get(2, "")
    return entries


def _fields(data: Any, start: int, end: int) -> list[tuple[int, int | tuple[int, int]]]:
    """Top-level (field number, varint value or (start, end) of a length-delimited value)."""
    out: list[tuple[int, int | tuple[int, int]]] = []
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((field, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((field, (pos, pos + length)))
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return out


def _varint(data: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
