"""The Open Inference Protocol codec without a server or a model: strict JSON, binary and BYTES tensors, gRPC
messages (tritonclient's generated classes), outputs and ids as asked, answers bounded and never NaN."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from ovxai.serving import protocol
from ovxai.serving.protocol import InferRequest, ModelSpec, ProtocolError, TensorSpec

SPEC = ModelSpec(
    "m",
    TensorSpec("input", "FP32", [-1, 3, 2, 2]),
    [TensorSpec("logits", "FP32", [-1, 4]), TensorSpec("saliency_map", "FP32", [-1, 4, 2, 2])],
)
X = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2]}


def parse(request: dict[str, Any] | bytes, binary: bytes = b"", max_bytes: int = 1 << 20) -> InferRequest:
    head = request if isinstance(request, bytes) else json.dumps(request).encode()
    return protocol.parse_rest(head + binary, str(len(head)) if binary else None, SPEC, max_bytes)


def refused(request: dict[str, Any] | bytes, binary: bytes = b"", status: int = 400) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse(request, binary)
    assert caught.value.status == status, str(caught.value)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_json_and_binary_tensors_parse_to_the_same_tensor() -> None:
    as_json = parse({"inputs": [{**GOOD, "data": X.ravel().tolist()}]})
    nested = parse({"inputs": [{**GOOD, "data": X.tolist()}]})
    binary = parse({"inputs": [{**GOOD, "parameters": {"binary_data_size": X.nbytes}}]}, X.tobytes())
    for parsed in (as_json, nested, binary):
        assert parsed.tensor is not None and parsed.tensor.dtype == np.float32
        np.testing.assert_array_equal(parsed.tensor, X)
        assert parsed.outputs == [("logits", False), ("saliency_map", False)]


def test_non_finite_numbers_and_booleans_are_refused() -> None:
    data = X.ravel().tolist()
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        body = json.dumps({"inputs": [{**GOOD, "data": [0.0] * 11 + [1.5]}]}).encode().replace(b"1.5", token)
        assert "not a JSON number" in refused(body)
    assert "beyond float32's range" in refused({"inputs": [{**GOOD, "data": [*data[:-1], 1e300]}]})
    assert "holds true/false" in refused({"inputs": [{**GOOD, "data": [*data[:-1], True]}]})
    assert "holds true/false" in refused({"inputs": [{**GOOD, "data": [[True] * 6, data[:6]]}]})
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    assert "NaN, infinite" in refused({"inputs": [{**GOOD, "parameters": {"binary_data_size": 48}}]}, nan.tobytes())
    # a boolean parameter elsewhere in the request is fine
    assert parse({"inputs": [{**GOOD, "data": data}], "parameters": {"binary_data_output": True}}).outputs[0][1]


def test_deep_json_is_a_400_not_a_crash() -> None:
    assert "nested more than" in refused(b"[" * 100_000 + b"]" * 100_000)
    assert "nested more than" in refused(b'{"inputs": ' + b"[" * 70 + b"]" * 70 + b"}")


def test_outputs_are_answered_once_each_and_ids_are_echoed_as_sent() -> None:
    outputs = [{"name": "logits"}, {"name": "logits", "parameters": {"binary_data": True}}, {"name": "saliency_map"}]
    parsed = parse({"id": 7, "inputs": [{**GOOD, "data": X.ravel().tolist()}], "outputs": outputs})
    assert parsed.outputs == [("logits", False), ("saliency_map", False)] and parsed.id == 7
    answer = {"logits": np.ones((1, 4), np.float32), "saliency_map": np.zeros((1, 4, 2, 2), np.float32)}
    body, headers = protocol.encode_rest(SPEC, parsed, answer)
    decoded = json.loads(body)
    assert decoded["id"] == 7 and [o["name"] for o in decoded["outputs"]] == ["logits", "saliency_map"]
    assert headers["content-type"] == "application/json"
    assert "'id' must be a string" in refused({"id": 1.5, "inputs": [{**GOOD, "data": X.ravel().tolist()}]})


def test_answers_never_carry_non_finite_tokens_and_are_bounded() -> None:
    parsed = parse({"inputs": [{**GOOD, "data": X.ravel().tolist()}]})
    bad = {"logits": np.array([[np.inf, 0, 0, 0]], np.float32), "saliency_map": np.zeros((1, 4, 2, 2), np.float32)}
    with pytest.raises(ProtocolError, match="NaN or infinite") as caught:
        protocol.encode_rest(SPEC, parsed, bad)
    assert caught.value.status == 500
    big = {"logits": np.zeros((1000, 4), np.float32), "saliency_map": np.zeros((1000, 4, 2, 2), np.float32)}
    with pytest.raises(ProtocolError, match="ask for binary outputs") as caught:
        protocol.check_response_size(parsed, big, 100_000)
    assert caught.value.status == 400
    binary = InferRequest(parsed.tensor, [("logits", True), ("saliency_map", True)])
    protocol.check_response_size(binary, big, 100_000)  # 80 KB of binary data fits


def test_bytes_inputs_carry_encoded_images() -> None:
    images = [b"\x89PNG first", b"\xff\xd8 second"]
    blob = b"".join(struct.pack("<I", len(i)) + i for i in images)
    spec = {"name": "input", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(blob)}}
    parsed = parse({"inputs": [spec]}, blob)
    assert parsed.tensor is None and parsed.images == images
    assert "ends before" in refused({"inputs": [{**spec, "shape": [3]}]}, blob)
    assert "[N] or [N, 1]" in refused({"inputs": [{**spec, "shape": [2, 2]}]}, blob)
    import base64

    b64 = [{"b64": base64.b64encode(i).decode()} for i in images]
    assert parse({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2, 1], "data": b64}]}).images == images


def test_bad_requests_name_what_is_wrong() -> None:
    data = X.ravel().tolist()
    for request, message in (
        ({"inputs": 5}, "no 'inputs' list"),
        ({"inputs": [{**GOOD, "name": "image", "data": data}]}, "unknown input 'image'"),
        ({"inputs": [{**GOOD, "datatype": "FP64", "data": data}]}, "has datatype FP64; the model takes FP32"),
        ({"inputs": [{**GOOD, "shape": [1, 3, 4, 4], "data": data}]}, "the model takes [-1, 3, 2, 2]"),
        ({"inputs": [{**GOOD, "data": [1, 2]}]}, "needs 12 numbers; the request has 2"),
        ({"inputs": [{**GOOD, "data": ["a"] * 12}]}, "not all numbers"),
        ({"inputs": [{**GOOD, "data": [[1, 2], [3]]}]}, "not a regular array"),
        ({"inputs": [{**GOOD, "data": data}], "outputs": [{"name": "scores"}]}, "unknown output 'scores'"),
    ):
        assert message in refused(request), message
    assert "is over" in refused({"inputs": [{**GOOD, "shape": [10**6, 3, 2, 2], "data": []}]}, status=413)
    with pytest.raises(ProtocolError, match="not a length within the body"):
        protocol.parse_rest(b"{}", "99", SPEC, 1 << 20)


def test_grpc_messages_round_trip_through_tritonclients_classes() -> None:
    pb = pytest.importorskip("tritonclient.grpc.service_pb2")
    message = pb.ModelInferRequest(model_name="m", id="r1")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=[1, 3, 2, 2])
    message.raw_input_contents.append(X.tobytes())
    message.outputs.add(name="saliency_map")
    message.outputs.add(name="saliency_map")
    parsed = protocol.parse_grpc(message, SPEC, 1 << 20)
    np.testing.assert_array_equal(parsed.tensor, X)
    assert parsed.outputs == [("saliency_map", True)] and parsed.id == "r1"
    answer = protocol.encode_grpc(pb.ModelInferResponse(), SPEC, parsed, {"saliency_map": np.ones((1, 4, 2, 2))})
    assert answer.id == "r1" and [o.name for o in answer.outputs] == ["saliency_map"]
    assert np.frombuffer(answer.raw_output_contents[0], np.float64).sum() == 16
    del message.raw_input_contents[:]
    tensor.contents.fp32_contents.extend(X.ravel().tolist())
    np.testing.assert_array_equal(protocol.parse_grpc(message, SPEC, 1 << 20).tensor, X)
    tensor.contents.fp32_contents[0] = float("nan")
    with pytest.raises(ProtocolError, match="NaN") as caught:
        protocol.parse_grpc(message, SPEC, 1 << 20)
    assert caught.value.grpc_code == "INVALID_ARGUMENT"
    assert ProtocolError(404, "x").grpc_code == "NOT_FOUND" and ProtocolError(503, "x").grpc_code == "UNAVAILABLE"
