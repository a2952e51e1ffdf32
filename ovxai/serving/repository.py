"""``ovxai export --repository DIR``: the model-repository layout that OpenVINO Model Server, Triton and
KServe load — ``DIR/NAME/1/model.xml`` (+ ``.bin``) or ``DIR/NAME/1/model.onnx``, and Triton's
``DIR/NAME/config.pbtxt`` (backend or platform, the input and output names, data types and dims,
``max_batch_size`` and dynamic batching).

The configuration is written as protobuf text by hand (no Triton package needed to export); the tests
parse it with Triton's own ``ModelConfig`` message (``tritonclient.grpc.model_config_pb2``). Triton and
OVMS do not pass the model's metadata (labels, preprocessing) on to clients: give them to
``Explainer.load(URL, labels=..., mean=..., scale=...)`` there, or serve with ``ovxai serve``, which does.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ovxai.errors import OvxaiError

VERSION = "1"
MAX_BATCH_SIZE = 8  # Triton's dynamic batcher forms batches of up to this many images
QUEUE_DELAY_US = 500  # how long the batcher waits to fill a batch
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "uint8": "TYPE_UINT8",
                 "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}  # fmt: skip


def model_file(repository: Path, output: Path) -> Path:
    """Where the model that ``output`` names goes: its stem is the model's name, its suffix the format."""
    name = output.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise OvxaiError(f"'{name}' cannot name a model in a repository", "use letters, digits, '_', '-', '.'")
    if output.suffix.lower() not in (".xml", ".onnx"):
        raise OvxaiError(f"output '{output}' is neither .xml nor .onnx", "e.g. output=resnet50_xai.xml")
    if repository.exists() and not repository.is_dir():
        raise OvxaiError(f"repository '{repository}' is a file", "give a folder; it is created if missing")
    return repository / name / VERSION / f"model{output.suffix.lower()}"


@contextmanager
def folders(model: Path) -> Iterator[None]:
    """Create the model's folders; if the block fails, remove the ones created here (nothing half-made stays)."""
    made = [p for p in (model.parent.parent.parent, model.parent.parent, model.parent) if not p.exists()]
    try:
        model.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = f"cannot create '{model.parent}' ({exc.strerror or exc})"
        raise OvxaiError(problem, "choose a writable folder") from None
    try:
        yield
    except BaseException:
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def write_config(model: Path, max_batch_size: int = MAX_BATCH_SIZE, queue_delay_us: int = QUEUE_DELAY_US) -> Path:
    """Write ``config.pbtxt`` for the model at ``DIR/NAME/1/model.*`` (read back with OpenVINO) beside its
    version folder. A model with a free batch dimension gets ``max_batch_size`` and dynamic batching; a
    fixed-batch one ``max_batch_size: 0`` and its full shapes."""
    import openvino as ov

    from ovxai.runtime.backends import _name

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
    lines = [f"name: {_quoted(model.parent.parent.name)}"]
    lines += ['backend: "openvino"', 'default_model_filename: "model.xml"'] if xml else ['platform: "onnxruntime_onnx"']
    lines.append(f"max_batch_size: {batch}")
    lines.append("input [\n" + tensor(image.get_any_name(), image) + "\n]")
    lines.append("output [\n" + ",\n".join(tensor(_name(o), o) for o in read.outputs) + "\n]")
    if batch:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    if xml:  # Triton's OpenVINO backend runs on CPU instances only
        lines.append("instance_group [\n  {\n    kind: KIND_CPU\n  }\n]")
    config = model.parent.parent / "config.pbtxt"
    scratch = config.with_name(".config.pbtxt.tmp")
    try:
        scratch.write_text("\n".join(lines) + "\n", encoding="utf-8")
        scratch.replace(config)
    except OSError as exc:
        scratch.unlink(missing_ok=True)
        raise OvxaiError(f"cannot write '{config}' ({exc.strerror or exc})", "check the repository folder") from None
    return config


def _quoted(text: str) -> str:
    """A protobuf text-format string."""
    if any(ord(c) < 32 for c in text):
        raise OvxaiError(f"the tensor name {text!r} holds control characters", "rename the tensor")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
