"""The Open Inference Protocol (KServe v2) as data: requests parsed and answers encoded, for REST (JSON and the
binary tensor data extension) and for gRPC (``ModelInferRequest`` with ``raw_input_contents``), without a server.

Both transports parse into one :class:`InferRequest` and encode from the model's outputs; every problem is a
:class:`ProtocolError` carrying the HTTP status, which :attr:`ProtocolError.grpc_code` maps to gRPC's. JSON is
read strictly: ``NaN``/``Infinity`` tokens, booleans among numbers, values outside the input type's finite range
and nesting deeper than a tensor needs are 400s, and answers never carry non-finite tokens. An input of datatype
``BYTES`` under the model's input name holds encoded images (JPEG, PNG, ... as OVMS and KServe take them), which
the server decodes and preprocesses as the model's metadata says.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovxai.runtime.backends import OIP_DATATYPES, Outputs

VERSION = "1"  # the one model version served
BYTES = "BYTES"
_DATATYPE_OF = {numpy: oip for oip, numpy in OIP_DATATYPES.items()}  # numpy's name -> the protocol's
_MAX_DEPTH = 64  # JSON nesting: a request needs 6 (body, inputs, tensor, data with 4 dimensions)
_JSON_COST = 6  # a JSON body's bytes -> memory while parsing it (Python floats and lists, then arrays)
_BINARY_COST = 3  # a binary body -> memory (the body, the batch it joins, the outputs)
_JSON_NUMBER_BYTES = 12  # the most an FP32 value takes as JSON text, on average, with its comma
# gRPC's status for each HTTP status an error carries (grpc.StatusCode names; grpc is imported by the server)
_GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 411: "INVALID_ARGUMENT",
               413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE",
               504: "DEADLINE_EXCEEDED"}  # fmt: skip


class ProtocolError(Exception):
    """An answer other than success: the HTTP status and the one-line message the client reads."""

    def __init__(self, status: int, message: str, grpc_code: str | None = None) -> None:
        super().__init__(clean(message))
        self.status = status
        self._grpc_code = grpc_code

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across processes (Ray) with its status
        return ProtocolError, (self.status, str(self), self._grpc_code)

    @property
    def grpc_code(self) -> str:
        """The gRPC status name (``grpc.StatusCode``'s) for the same refusal."""
        default = _GRPC_CODES.get(self.status, "INTERNAL" if self.status >= 500 else "INVALID_ARGUMENT")
        return self._grpc_code or default


def clean(text: str) -> str:
    """One line, no object reprs or memory addresses, bounded."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>|0x[0-9a-fA-F]{6,}", "?", " ".join(text.split()))
    return text[:500]


def datatype(numpy_name: str) -> str:
    return _DATATYPE_OF.get(numpy_name, numpy_name.upper())


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 where dynamic

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass(frozen=True)
class ModelSpec:
    """The served model's name and tensors, as its metadata gives them."""

    name: str
    input: TensorSpec
    outputs: list[TensorSpec]

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(OIP_DATATYPES[self.input.datatype])

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise ProtocolError(404, f"unknown model '{name[:100]}'; this server serves '{self.name}'")
        if version not in (None, "", VERSION):
            raise ProtocolError(404, f"unknown version '{version[:20]}' of '{self.name}'; it has version {VERSION}")


@dataclass
class InferRequest:
    """A parsed inference request: the input tensor (or encoded images to decode) and the outputs to send back."""

    tensor: np.ndarray | None
    outputs: list[tuple[str, bool]]  # (output name, as binary data), each name once
    id: str | int | None = None
    images: list[bytes] = field(default_factory=list)  # a BYTES input: encoded images, decoded by the server


def memory_cost(length: int, binary: bool) -> int:
    """What a request body of ``length`` bytes may take in memory until its answer is sent."""
    return length * (_BINARY_COST if binary else _JSON_COST)


# -- REST -------------------------------------------------------------------------------------------------


def load_json(data: bytes, what: str) -> Any:
    """Strict JSON: NaN/Infinity tokens and nesting deeper than any request needs are refused."""

    def constant(token: str) -> Any:
        raise ProtocolError(400, f"{what} holds {token}, which is not a JSON number; send finite numbers")

    if _depth_over(data, _MAX_DEPTH):
        raise ProtocolError(400, f"{what} is nested more than {_MAX_DEPTH} levels deep")
    try:
        return json.loads(data, parse_constant=constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(400, f"{what} is not JSON") from None


def _depth_over(data: bytes, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit``, counted before parsing (brackets inside strings count too,
    which only makes the bound stricter for text that no request holds)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = np.frombuffer(data.translate(None, delete=_NOT_BRACKETS), np.uint8)
    depth = np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1))
    return bool(depth.max(initial=0) > limit)


_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def parse_rest(body: bytes, header_length: str | None, spec: ModelSpec, max_bytes: int) -> InferRequest:
    """A REST inference request (JSON, optionally followed by binary tensor data)."""
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length '{text[:20]}' is not a length within the body")
        head, binary = body[: int(text)], memoryview(body)[int(text) :]
    else:
        head, binary = body, memoryview(b"")
    request = load_json(head, "the request")
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError(400, "the request has no 'inputs' list; send a v2 inference request")
    parameters = _parameters(request, "the request")
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"the model takes one input, '{spec.input.name}'; the request has {len(inputs)}")
    booleans = b"true" in head or b"false" in head  # only then can a boolean hide among the numbers
    tensor, images, used = _rest_input(inputs[0], binary, spec, max_bytes, booleans)
    if used != len(binary):
        raise ProtocolError(400, f"the body has {len(binary) - used} bytes of binary data that no input claims")
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise ProtocolError(400, "the parameter 'binary_data_output' must be true or false")
    wanted = request.get("outputs")
    if wanted is not None and (not isinstance(wanted, list) or not wanted):
        raise ProtocolError(400, "'outputs' must be a non-empty list of {\"name\": ...} objects")
    asked: list[tuple[Any, bool]] = []
    for item in wanted or []:
        name = item.get("name") if isinstance(item, dict) else None
        options = _parameters(item, f"output '{name}'") if isinstance(item, dict) else {}
        if options.get("classification"):
            raise ProtocolError(400, "the classification extension is not supported; ask for the tensors")
        as_binary = options.get("binary_data", default_binary)
        if not isinstance(as_binary, bool):
            raise ProtocolError(400, f"the parameter 'binary_data' of output '{name}' must be true or false")
        asked.append((name, as_binary))
    return InferRequest(tensor, _outputs(spec, asked, default_binary), _request_id(request.get("id")), images)


def _request_id(value: Any) -> str | int | None:
    """The request's id, echoed as sent: a string, or a whole number (what clients that number requests send)."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ProtocolError(400, "the request's 'id' must be a string or a whole number")


def _outputs(spec: ModelSpec, asked: list[tuple[Any, bool]], default_binary: bool) -> list[tuple[str, bool]]:
    """The outputs to answer: each asked name once (the first asking wins), all of them when none is asked."""
    names = [o.name for o in spec.outputs]
    if not asked:
        return [(name, default_binary) for name in names]
    chosen: dict[str, bool] = {}
    for name, as_binary in asked:
        if not isinstance(name, str) or name not in names:
            raise ProtocolError(400, f"unknown output {str(name)[:100]!r}; the model has {', '.join(names)}")
        chosen.setdefault(name, as_binary)
    return list(chosen.items())


def _rest_input(
    item: dict[str, Any], binary: memoryview, spec: ModelSpec, max_bytes: int, booleans: bool
) -> tuple[np.ndarray | None, list[bytes], int]:
    """(tensor or None, encoded images, binary bytes used) of a request's input."""
    kind, shape = item.get("datatype"), item.get("shape")
    _check_name(item.get("name"), spec)
    name = spec.input.name
    parameters = _parameters(item, f"input '{name}'")
    size = parameters.get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0 or size > len(binary)):
        raise ProtocolError(400, f"input '{name}' claims binary_data_size {str(size)[:20]}; the body has {len(binary)}")
    if kind == BYTES:
        count = _image_count(name, shape)
        if size is not None:
            return None, split_bytes(binary[:size], count, f"input '{name}'"), size
        return None, _b64_items(item.get("data"), count, name), 0
    _check_datatype(name, kind, spec)
    dims = _check_shape(name, shape, spec)
    nbytes = spec.input_dtype.itemsize * math.prod(dims)
    if nbytes > max_bytes:
        raise ProtocolError(413, f"input '{name}' of shape {dims} is over {max_bytes} bytes")
    if size is not None:
        if size != nbytes:
            raise ProtocolError(400, f"input '{name}' of shape {dims} is {nbytes} bytes, not binary_data_size {size}")
        return finite(np.frombuffer(binary[:size], spec.input_dtype).reshape(dims), name), [], size
    data = item.get("data")
    if not isinstance(data, list):
        raise ProtocolError(400, f"input '{name}' has neither 'data' nor a binary_data_size parameter")
    if booleans and _holds_boolean(data):
        raise ProtocolError(400, f"the data of input '{name}' holds true/false; send numbers")
    try:
        values = np.array(data)
    except (ValueError, OverflowError):  # ragged nesting, an integer beyond 64 bits
        raise ProtocolError(400, f"the data of input '{name}' is not a regular array of numbers") from None
    count = math.prod(dims)
    if values.dtype.kind not in "iuf" or values.size != count:
        what = f"{values.size} numbers" if values.dtype.kind in "iuf" else "values that are not all numbers"
        raise ProtocolError(400, f"input '{name}' of shape {dims} needs {count} numbers; the request has {what}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = values.astype(spec.input_dtype)
    if spec.input_dtype.kind in "iu" and not np.array_equal(converted, values):
        raise ProtocolError(400, f"the data of input '{name}' holds values that are not {spec.input.datatype}")
    return finite(converted.reshape(dims), name), [], 0


def finite(tensor: np.ndarray, name: str) -> np.ndarray:
    """The tensor, if every value is finite (a float input); 400 otherwise: NaN in, NaN maps out."""
    if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
        raise ProtocolError(
            400, f"input '{name}' holds values that are NaN, infinite or beyond {tensor.dtype.name}'s range"
        )
    return tensor


def _holds_boolean(data: list[Any]) -> bool:
    stack: list[Any] = [data]
    while stack:
        items = stack.pop()
        for value in items:
            if value is True or value is False:
                return True
            if isinstance(value, list):
                stack.append(value)
    return False


def _check_name(name: Any, spec: ModelSpec) -> None:
    if name != spec.input.name:
        raise ProtocolError(400, f"unknown input {str(name)[:100]!r}; the model's input is '{spec.input.name}'")


def _check_datatype(name: str, kind: Any, spec: ModelSpec) -> None:
    if kind != spec.input.datatype:
        raise ProtocolError(
            400,
            f"input '{name}' has datatype {str(kind)[:20]}; the model takes {spec.input.datatype} (or BYTES images)",
        )


def _check_shape(name: str, shape: Any, spec: ModelSpec) -> list[int]:
    model_shape = spec.input.shape
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != len(model_shape)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        or any(m != -1 and d != m for d, m in zip(shape, model_shape, strict=True))
    ):
        shown = str(list(shape) if isinstance(shape, (list, tuple)) else shape)[:60]
        raise ProtocolError(400, f"input '{name}' has shape {shown}; the model takes {model_shape} (-1: any)")
    return [int(d) for d in shape]


def _image_count(name: str, shape: Any) -> int:
    """A BYTES input is a batch of images: shape [N] or [N, 1]."""
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) not in (1, 2)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise ProtocolError(400, f"BYTES input '{name}' has shape {str(shape)[:40]}; send images as [N] or [N, 1]")
    return int(shape[0])


def split_bytes(data: bytes | memoryview, count: int, what: str) -> list[bytes]:
    """The elements of a serialized BYTES tensor: each a 4-byte little-endian length, then that many bytes."""
    items, offset, view = [], 0, memoryview(data)
    for _ in range(count):
        if offset + 4 > len(view):
            raise ProtocolError(400, f"{what} ends before its {count} BYTES elements do")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise ProtocolError(400, f"{what} has an element of {length} bytes that the data does not hold")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise ProtocolError(400, f"{what} has {len(view) - offset} bytes beyond its {count} BYTES elements")
    return items


def _b64_items(data: Any, count: int, name: str) -> list[bytes]:
    """BYTES images in JSON: ``{"b64": "..."}`` objects, as OVMS takes them."""
    import base64
    import binascii

    if not isinstance(data, list) or len(data) != count:
        raise ProtocolError(400, f"BYTES input '{name}' needs {count} {{\"b64\": ...}} items in 'data'")
    items = []
    for item in data:
        text = item.get("b64") if isinstance(item, dict) else None
        if not isinstance(text, str):
            raise ProtocolError(400, f'BYTES input \'{name}\' in JSON takes {{"b64": "<base64 image>"}} items')
        try:
            items.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError(400, f"a b64 item of input '{name}' is not base64") from None
    return items


def _parameters(spec: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(400, f"the 'parameters' of {what} must be an object")
    return parameters


def check_response_size(request: InferRequest, outputs: Outputs, limit: int) -> None:
    """Refuse, before encoding, an answer over ``limit`` bytes (JSON numbers counted at their usual width)."""
    total = 0
    for name, as_binary in request.outputs:
        array = outputs[name]
        total += array.nbytes if as_binary else array.size * _JSON_NUMBER_BYTES
    if total > limit:
        some_json = not all(b for _, b in request.outputs)
        fix = (
            "ask for binary outputs (binary_data_output), fewer images per request, or a model exported with "
            "--explain topK"
            if some_json
            else "send fewer images per request, or serve a model exported with --explain topK"
        )
        size = f"the answer would take about {total // 1024} KiB, over the limit of {limit // 1024} KiB"
        raise ProtocolError(400, f"{size}; {fix}", grpc_code="RESOURCE_EXHAUSTED")


def encode_rest(spec: ModelSpec, request: InferRequest, outputs: Outputs) -> tuple[bytes, dict[str, str]]:
    """The v2 REST answer: (body, headers). Binary outputs follow the JSON, in the order listed."""
    listed, blobs = [], []
    for name, as_binary in request.outputs:
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": datatype(array.dtype.name), "shape": list(array.shape)}
        if as_binary:
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ProtocolError(500, f"the model's output '{name}' holds NaN or infinite values")
            entry["data"] = array.ravel().tolist()
        listed.append(entry)
    answer: dict[str, Any] = {"model_name": spec.name, "model_version": VERSION, "outputs": listed}
    if request.id is not None:
        answer["id"] = request.id
    head = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}
    return b"".join([head, *blobs]), headers


# -- gRPC -------------------------------------------------------------------------------------------------

# The typed repeated field of ``InferTensorContents`` that carries each datatype.
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}  # fmt: skip


def parse_grpc(message: Any, spec: ModelSpec, max_bytes: int) -> InferRequest:
    """A ``ModelInferRequest`` (tritonclient's generated class) as an :class:`InferRequest`."""
    inputs = message.inputs
    if len(inputs) != 1:
        raise ProtocolError(400, f"the model takes one input, '{spec.input.name}'; the request has {len(inputs)}")
    raw = message.raw_input_contents
    if len(raw) > 1:
        raise ProtocolError(400, f"the request has {len(raw)} raw_input_contents for one input")
    item = inputs[0]
    _check_name(item.name, spec)
    shape = list(item.shape)
    images: list[bytes] = []
    tensor = None
    if item.datatype == BYTES:
        count = _image_count(item.name, shape)
        if raw:
            images = split_bytes(raw[0], count, f"input '{item.name}'")
        else:
            images = list(item.contents.bytes_contents)
            if len(images) != count:
                raise ProtocolError(400, f"input '{item.name}' of shape {shape} has {len(images)} bytes_contents")
    else:
        _check_datatype(item.name, item.datatype, spec)
        dims = _check_shape(item.name, shape, spec)
        dtype = spec.input_dtype
        nbytes = dtype.itemsize * math.prod(dims)
        if nbytes > max_bytes:
            raise ProtocolError(413, f"input '{item.name}' of shape {dims} is over {max_bytes} bytes")
        if raw:
            if len(raw[0]) != nbytes:
                got = f"raw_input_contents has {len(raw[0])}"
                raise ProtocolError(400, f"input '{item.name}' of shape {dims} is {nbytes} bytes; {got}")
            tensor = np.frombuffer(raw[0], dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(dims)
        else:
            field_name = _CONTENTS.get(item.datatype)
            values = getattr(item.contents, field_name) if field_name else []
            if len(values) != math.prod(dims):
                needs = f"input '{item.name}' of shape {dims} needs {math.prod(dims)} values"
                raise ProtocolError(400, f"{needs}; the request has {len(values)} (send raw_input_contents)")
            tensor = np.asarray(values, dtype).reshape(dims)
        tensor = finite(tensor, item.name)
    asked = [(o.name, True) for o in message.outputs]
    return InferRequest(tensor, _outputs(spec, asked, True), message.id or None, images)


def encode_grpc(response: Any, spec: ModelSpec, request: InferRequest, outputs: Outputs) -> Any:
    """Fill a ``ModelInferResponse``: every output as raw_output_contents (what tritonclient reads)."""
    response.model_name = spec.name
    response.model_version = VERSION
    if request.id is not None:
        response.id = str(request.id)
    for name, _ in request.outputs:
        array = np.ascontiguousarray(outputs[name])
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = datatype(array.dtype.name)
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return response


def dims(shape: Sequence[int | None]) -> list[int]:
    """A session's shape for metadata: -1 for each dynamic dimension."""
    return [-1 if d is None else int(d) for d in shape]
