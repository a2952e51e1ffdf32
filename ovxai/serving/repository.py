"""``ovxai export --repository DIR``: the model-repository layout that OpenVINO Model Server, Triton and
KServe load — ``DIR/NAME/N/model.xml`` (+ ``.bin``) or ``DIR/NAME/N/model.onnx`` for version N (default 1),
and Triton's ``DIR/NAME/config.pbtxt`` (backend or platform, the input and output names, data types and
dims, ``max_batch_size`` and dynamic batching).

A repository never ends up serving something other than what was just exported: a model's folder that
holds versions takes a new one only by number (``--version N``), above all those there (servers load the
highest by default); its ``config.pbtxt`` is kept only when it is what the new model needs, else the export
is refused; and a version appears whole, with its configuration, by one rename.

The configuration is written as protobuf text by hand (no Triton package needed to export); the tests
parse it with Triton's own ``ModelConfig`` message (``tritonclient.grpc.model_config_pb2``). Triton and
OVMS do not pass the model's metadata (labels, preprocessing) on to clients: give them to
``Explainer.load(URL, labels=..., mean=..., scale=...)`` there, or serve with ``ovxai serve``, which does.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ovxai.errors import OvxaiError
from ovxai.runtime.pictures import write_atomically

MAX_BATCH_SIZE = 8  # Triton's dynamic batcher forms batches of up to this many images
QUEUE_DELAY_US = 500  # how long the batcher waits to fill a batch
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "uint8": "TYPE_UINT8",
                 "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """Where an export goes in a repository: ``folder`` (``DIR/NAME``) gets the version ``version``, whose
    model file is ``model.xml`` or ``model.onnx`` (``suffix``)."""

    folder: Path
    version: int
    suffix: str

    @property
    def name(self) -> str:
        return self.folder.name


def versions(folder: Path) -> list[int]:
    """The versions in a model's folder: its subfolders named by a number without leading zeros (those that
    Triton and OVMS load; they ignore the rest)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if re.fullmatch(r"[1-9]\d*", p.name) and p.is_dir())


def plan(repository: Path, output: Path, version: int | None = None) -> Entry:
    """Where the model that ``output`` names goes (its stem is the model's name, its suffix the format), as
    version ``version`` (default 1), checked before anything is written. A repository must never serve
    something other than what was just exported: Triton's and OVMS's default policy serves a model's highest
    version, so a new version must be above every one there — and a folder that holds a model already takes
    one only when it is asked for by number."""
    name = output.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise OvxaiError(f"'{name}' cannot name a model in a repository", "use letters, digits, '_', '-', '.'")
    if output.suffix.lower() not in (".xml", ".onnx"):
        raise OvxaiError(f"output '{output}' is neither .xml nor .onnx", "e.g. output=resnet50_xai.xml")
    if repository.exists() and not repository.is_dir():
        raise OvxaiError(f"repository '{repository}' is a file", "give a folder; it is created if missing")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise OvxaiError(f"version= {version} is not a model version", "versions are whole numbers from 1")
    folder = repository / name
    present = versions(folder)
    if present and version is None:
        listed = ", ".join(map(str, present))
        raise OvxaiError(
            f"'{folder}' already holds version{'s' if len(present) > 1 else ''} {listed} of a model",
            f"add it as the next with version= {present[-1] + 1}, or export under another name",
        )
    if present and version is not None and version <= present[-1]:
        taken = "exists already" if version in present else f"is below version {present[-1]}, which would be served"
        raise OvxaiError(f"version {version} of '{folder}' {taken}", f"use version= {present[-1] + 1}")
    return Entry(folder, version or 1, output.suffix.lower())


@contextmanager
def publish(entry: Entry) -> Iterator[Path]:
    """The path to export the model file to (in a scratch folder), then, when the block succeeds, the version
    in place with ``config.pbtxt``: at once (a rename), so that a server watching the repository never sees
    half a model or a version without its configuration. An existing ``config.pbtxt`` is kept only when it
    is what this model needs (one that differs is an error: never overwritten without a word). If the block
    fails, nothing is left, not even a folder made here."""
    repository = entry.folder.parent
    made = [p for p in (repository, entry.folder) if not p.exists()]
    new_model = not entry.folder.exists()
    scratch = (repository / f".{entry.name}.{os.getpid()}.tmp") if new_model else (
        entry.folder / f".{entry.version}.{os.getpid()}.tmp"
    )  # fmt: skip
    stage = scratch / str(entry.version) if new_model else scratch
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        raise OvxaiError(f"cannot create '{stage}' ({exc.strerror or exc})", "choose a writable folder") from None
    try:
        model = stage / f"model{entry.suffix}"
        yield model
        config = config_text(model, entry.name)
        existing = entry.folder / CONFIG
        if existing.exists():
            old = existing.read_text(encoding="utf-8", errors="replace")
            if old != config:
                raise OvxaiError(
                    f"'{existing}' does not describe the model just exported ({_first_difference(old, config)}); "
                    "nothing was added",
                    f"remove it to have ovxai write one, or export under another name than '{entry.name}'",
                )
        elif new_model:
            (scratch / CONFIG).write_text(config, encoding="utf-8")
        else:
            write_atomically(existing, config.encode())
        if new_model:
            scratch.rename(entry.folder)
        else:
            stage.rename(entry.folder / str(entry.version))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True)
        raise


CONFIG = "config.pbtxt"


def _first_difference(old: str, new: str) -> str:
    """'line 3: backend: "openvino" here, backend: "onnxruntime" needed' (each side cut short)."""
    for number, (a, b) in enumerate(itertools.zip_longest(old.splitlines(), new.splitlines(), fillvalue=""), 1):
        if a.strip() != b.strip():
            return f"line {number}: '{a.strip()[:60]}' there, '{b.strip()[:60]}' needed"
    return "in its whitespace"


def config_text(
    model: Path, name: str, max_batch_size: int = MAX_BATCH_SIZE, queue_delay_us: int = QUEUE_DELAY_US
) -> str:
    """Triton's ``config.pbtxt`` for the model file ``model`` (read back with OpenVINO) served as ``name``.
    A model with a free batch dimension gets ``max_batch_size`` and
    dynamic batching; a fixed-batch one ``max_batch_size: 0`` and its full shapes."""
    import openvino as ov

    from ovxai.runtime.backends import output_name

    read = ov.Core().read_model(os.fspath(model))
    image = read.inputs[0]
    batch_free = image.get_partial_shape()[0].is_dynamic
    batch = max_batch_size if batch_free else 0

    def tensor(name: str, port: object) -> str:
        dtype = str(port.get_element_type().to_dtype().name)  # type: ignore[attr-defined]
        if dtype not in _TRITON_TYPES:
            raise OvxaiError(f"tensor '{name}' has type {dtype}, which Triton's configuration cannot name", None)
        dims = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]  # type: ignore[attr-defined]
        if batch:
            dims = dims[1:]
        fields = [
            f"name: {_quoted(name)}",
            f"data_type: {_TRITON_TYPES[dtype]}",
            f"dims: [ {', '.join(map(str, dims))} ]",
        ]
        return "  {\n" + "".join(f"    {f}\n" for f in fields) + "  }"

    xml = model.suffix.lower() == ".xml"
    lines = [f"name: {_quoted(name)}"]
    lines += ['backend: "openvino"', 'default_model_filename: "model.xml"'] if xml else ['platform: "onnxruntime_onnx"']
    lines.append(f"max_batch_size: {batch}")
    lines.append("input [\n" + tensor(image.get_any_name(), image) + "\n]")
    lines.append("output [\n" + ",\n".join(tensor(output_name(o), o) for o in read.outputs) + "\n]")
    if batch:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    if xml:  # Triton's OpenVINO backend runs on CPU instances only
        lines.append("instance_group [\n  {\n    kind: KIND_CPU\n  }\n]")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A protobuf text-format string."""
    if any(ord(c) < 32 for c in text):
        raise OvxaiError(f"the tensor name {text!r} holds control characters", "rename the tensor")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
