"""``ovxai serve`` in process (no Ray): one real server per module (a subprocess on loopback, stopped at the end)
answers stock ``tritonclient.http`` and ``tritonclient.grpc`` clients, encoded images, KServe's explain verb and
``/v1``; bad input gets one line of JSON (or the gRPC status); the faults a careful user found stay fixed: a taken
port, a deleted model file, non-finite and deep JSON, unbounded memory, tracebacks, ports off loopback, requests
cut at shutdown. Ray Serve's hosting is tested in test_serve_ray.py."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LABELS, NETS
from PIL import Image
from processes import (
    OVXAI,
    Lines,
    cluster,  # noqa: F401 - test_collection.py imports the Ray head fixture from here
    free_port,
    listening,
    raw,
    request,
    rss_mib,
    start,
    stop,
)
from runners import cli_fails, run

from ovxai.errors import OvxaiError
from ovxai.metadata import read_parameters
from ovxai.runtime import Explainer

triton_http = pytest.importorskip("tritonclient.http")
triton_grpc = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("uvicorn")
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "samples/photos"
SIZE = NETS["resnet"][1]
LIMITS = {"max_batch_size": 4, "read_timeout_s": 1.5, "max_response": 64 * 1024, "max_in_flight": 24 * 2**20}


class Server:
    """A server process: its REST base URL, gRPC address, PID and output."""

    def __init__(self, proc: subprocess.Popen[str], lines: Lines, port: int, grpc_port: int) -> None:
        self.proc, self.lines, self.port, self.grpc_port = proc, lines, port, grpc_port
        self.base = f"http://127.0.0.1:{port}"
        self.grpc = f"127.0.0.1:{grpc_port}"


def serve(model: Path, limits: dict[str, Any] | None = None, *flags: str) -> Server:
    """``ovxai serve`` as a process (``limits``: ServeOptions that have no flag, through the library's serve())."""
    port, grpc_port = free_port(), free_port()
    if limits is None:
        argv = [*OVXAI, "serve", "--model", str(model), "--port", str(port), "--grpc-port", str(grpc_port), *flags]
    else:
        program = (
            "from ovxai.serving.embedded import serve; from ovxai.serving.options import ServeOptions; "
            f"serve(ServeOptions({str(model)!r}, **{limits!r}), '127.0.0.1', {port}, {grpc_port}, "
            "lambda url, grpc: print('serving', url, flush=True))"
        )
        argv = [sys.executable, "-c", program]
    proc = start(argv)
    lines = Lines(proc)
    try:
        lines.wait_for("serving", 60)
    except AssertionError:
        stop([proc])
        raise
    return Server(proc, lines, port, grpc_port)


@pytest.fixture(scope="module")
def model(patched: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the patched IR the module's server serves (and a test deletes while it serves)."""
    folder = tmp_path_factory.mktemp("served")
    for suffix in (".xml", ".bin"):
        shutil.copy(patched["xml"].with_suffix(suffix), folder / f"resnet_xai{suffix}")
    return folder / "resnet_xai.xml"


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[Server]:
    running = serve(model, LIMITS)
    try:
        yield running
    finally:
        stop([running.proc])


def http_client(server: Server) -> Any:
    return triton_http.InferenceServerClient(server.base.removeprefix("http://"))


def grpc_client(server: Server) -> Any:
    return triton_grpc.InferenceServerClient(server.grpc)


def tensor_input(module: Any, x: np.ndarray, binary: bool = True) -> Any:
    tensor = module.InferInput("input", list(x.shape), "FP32")
    if module is triton_http:
        tensor.set_data_from_numpy(x, binary_data=binary)
    else:
        tensor.set_data_from_numpy(x)
    return tensor


def images_input(module: Any, images: list[bytes]) -> Any:
    tensor = module.InferInput("input", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def bomb_png(width: int, height: int) -> bytes:
    """A few bytes of PNG that claim width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# -- the Open Inference Protocol: REST and gRPC, stock clients ----------------------------------------------


def test_tritonclient_http_and_grpc_get_the_models_answers(server: Server, patched: dict[str, Path]) -> None:
    x = np.random.default_rng(1).random((2, 3, SIZE, SIZE), dtype=np.float32)
    direct = run(patched["xml"], x, "openvino")
    for module, client in ((triton_http, http_client(server)), (triton_grpc, grpc_client(server))):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("resnet_xai")
        assert client.is_model_ready("resnet_xai", "1") and not client.is_model_ready("other")
        meta = client.get_model_metadata("resnet_xai", **({"as_json": True} if module is triton_grpc else {}))
        shapes = {o["name"]: [int(d) for d in o["shape"]] for o in meta["outputs"]}
        assert shapes["saliency_map"] == [-1, 10, 4, 4]  # K is fixed by the model: said so
        assert [int(d) for d in meta["inputs"][0]["shape"]] == [-1, 3, SIZE, SIZE]
        for binary in (True, False) if module is triton_http else (True,):
            result = client.infer("resnet_xai", [tensor_input(module, x, binary)])
            for name in ("logits", "saliency_map"):
                np.testing.assert_allclose(result.as_numpy(name), direct[name], atol=1e-5)
    info = read_parameters(http_client(server).get_model_metadata("resnet_xai")["parameters"])
    assert info.labels == LABELS
    server_meta = grpc_client(server).get_server_metadata(as_json=True)
    assert server_meta["name"] == "ovxai" and "binary_tensor_data" in server_meta["extensions"]


def test_grpc_async_infer_and_status_codes(server: Server) -> None:
    client = grpc_client(server)
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    done: list[Any] = []
    event = threading.Event()

    def callback(result: Any, error: Any) -> None:
        done.append(error or result)
        event.set()

    client.async_infer("resnet_xai", [tensor_input(triton_grpc, x)], callback, request_id="42")
    assert event.wait(30)
    assert done[0].as_numpy("logits").shape == (1, 10) and done[0].get_response().id == "42"

    def code(call: Any) -> str:
        with pytest.raises(InferenceServerException) as caught:
            call()
        return str(caught.value.status())

    assert code(lambda: client.get_model_metadata("other")) == "StatusCode.NOT_FOUND"
    bad = triton_grpc.InferInput("input", [1, 3, 64, 64], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
    assert code(lambda: client.infer("resnet_xai", [bad])) == "StatusCode.INVALID_ARGUMENT"
    nan = x.copy()
    nan[0, 0, 0, 0] = np.inf
    assert code(lambda: client.infer("resnet_xai", [tensor_input(triton_grpc, nan)])) == "StatusCode.INVALID_ARGUMENT"
    huge = np.zeros((int(21 * 2**20 / x.nbytes) + 1, 3, SIZE, SIZE), np.float32)  # over the 20 MiB limit
    assert (
        code(lambda: client.infer("resnet_xai", [tensor_input(triton_grpc, huge)])) == "StatusCode.RESOURCE_EXHAUSTED"
    )
    many = np.zeros((100, 3, SIZE, SIZE), np.float32)  # within the request limit; its answer is over 64 KiB
    assert (
        code(lambda: client.infer("resnet_xai", [tensor_input(triton_grpc, many)])) == "StatusCode.RESOURCE_EXHAUSTED"
    )
    slow = np.zeros((64, 3, SIZE, SIZE), np.float32)
    status = code(lambda: client.infer("resnet_xai", [tensor_input(triton_grpc, slow)], client_timeout=0.001))
    assert status == "StatusCode.DEADLINE_EXCEEDED"
    assert client.infer("resnet_xai", [tensor_input(triton_grpc, x)]).as_numpy("logits").shape == (1, 10)


def test_encoded_images_go_straight_into_infer(server: Server, patched: dict[str, Path]) -> None:
    """JPEG/PNG bytes as a BYTES input (REST binary and gRPC), preprocessed by the server as the model says."""
    local = Explainer.load(patched["xml"])
    photos = [(PHOTOS / "coffee.jpg").read_bytes(), (PHOTOS / "rocket.jpg").read_bytes()]
    buffer = io.BytesIO()
    Image.open(PHOTOS / "coffee.jpg").save(buffer, format="PNG")
    photos.append(buffer.getvalue())
    expected = local.session.infer(local.prepare(photos).tensor)
    for module, client in ((triton_http, http_client(server)), (triton_grpc, grpc_client(server))):
        result = client.infer("resnet_xai", [images_input(module, photos)])
        np.testing.assert_allclose(result.as_numpy("logits"), expected["logits"], atol=1e-4)
        np.testing.assert_allclose(result.as_numpy("saliency_map"), expected["saliency_map"], atol=1e-4)
    with pytest.raises(InferenceServerException, match="not a usable image") as caught:
        http_client(server).infer("resnet_xai", [images_input(triton_http, [b"not an image"])])
    assert caught.value.status() == "400"


def test_rest_details_ids_outputs_head_and_urls(server: Server) -> None:
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    head = {"id": 17, "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
            "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "logits"}, {"name": "logits"}]}  # fmt: skip
    text = json.dumps(head).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v2/models/resnet_xai/infer", text + x.tobytes(),
                 {"Inference-Header-Content-Length": str(len(text))})  # fmt: skip
    answer = json.loads(conn.getresponse().read())
    assert answer["id"] == 17 and [o["name"] for o in answer["outputs"]] == ["logits"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/resnet_xai/ready"):
        status, kind, body = request(server.base + path, method="HEAD")
        assert status == 200 and kind == "application/json" and body == b""
    status, kind, body = request(server.base + "/v2/models/resnet_xai?" + "x" * 70_000)
    assert status == 400 and "URL is over" in json.loads(body)["error"]
    status, _, body = request(server.base + "/v2/health/live", b"x")
    assert status == 405 and "use GET, HEAD" in json.loads(body)["error"]
    status, _, body = request(server.base + "/nowhere")
    assert status == 404 and set(json.loads(body)) == {"error"}


def test_bad_json_is_a_400_and_never_answered_with_nan(server: Server) -> None:
    url = server.base + "/v2/models/resnet_xai/infer"
    count = 3 * SIZE * SIZE
    spec = {"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE]}
    for data, message in (
        (json.dumps({"inputs": [{**spec, "data": [1e300] + [0.0] * (count - 1)}]}).encode(), "beyond float32's range"),
        (json.dumps({"inputs": [{**spec, "data": [0.5] + [0.0] * (count - 1)}]}).encode().replace(b"0.5", b"NaN", 1),
         "not a JSON number"),
        (json.dumps({"inputs": [{**spec, "data": [True] + [0.0] * (count - 1)}]}).encode(), "true/false"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
        (b"\x00garbage", "is not JSON"),
    ):  # fmt: skip
        status, kind, body = request(url, data)
        assert status == 400 and kind == "application/json" and message in json.loads(body)["error"], body[:200]
    many = np.zeros((64, 3, SIZE, SIZE), np.float32)  # its answer as JSON numbers is over 64 KiB: use binary
    tensor = triton_http.InferInput("input", list(many.shape), "FP32")
    tensor.set_data_from_numpy(many)
    wanted = [triton_http.InferRequestedOutput(name, binary_data=False) for name in ("logits", "saliency_map")]
    with pytest.raises(InferenceServerException, match="ask for binary outputs") as caught:
        http_client(server).infer("resnet_xai", [tensor], outputs=wanted)
    assert caught.value.status() == "400"


def test_rest_limits_answer_from_headers_with_one_line_of_json(server: Server) -> None:
    start_line = b"POST /v1/explain HTTP/1.1\r\nHost: x\r\n"
    for data, status, message in (
        (start_line + b"Content-Length: 26214400\r\n\r\n", 413, "over 20971520 bytes"),  # answered before reading
        (start_line + b"\r\n", 411, "no Content-Length"),
        (start_line + b"Transfer-Encoding: chunked\r\n\r\n", 411, "chunked"),
        (start_line + b"Content-Length: 0\r\n\r\n", 400, "empty body"),
        (start_line + b"Content-Length: 17\r\n\r\nGIF89a not really", 400, "not a usable image"),
        (start_line + b"Content-Length: -1\r\n\r\n", 400, "not valid HTTP"),
        (start_line + b"Content-Length: abc\r\n\r\n", 400, "not valid HTTP"),
        (start_line + b"X: " + b"y" * 70_000 + b"\r\n\r\n", 400, "headers are over"),
    ):
        got, body = raw(server.port, data)
        assert got == status and message in json.loads(body)["error"], (data[:60], body)
        assert len(body.splitlines()) == 1
    for query, data, message in (
        ("", bomb_png(9000, 9000), "has 9000 x 9000 pixels, over the limit of 40,000,000"),
        ("?targets=top11", b"x", "asks for 11 classes but the model has 10"),
        ("?top_k=0", b"x", "top_k '0' is not a count"),
        ("?format=gif", b"x", "format 'gif' is unknown"),
        ("?target=2", b"x", "unknown parameter 'target'"),
    ):
        status, kind, body = request(f"{server.base}/v1/explain{query}", data)
        error = json.loads(body)["error"]
        assert status == 400 and kind == "application/json" and message in error, (query, error)


def test_a_stalled_body_gets_408_and_blocks_no_one(server: Server) -> None:
    data = (PHOTOS / "coffee.jpg").read_bytes()
    answers: list[int] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as stalled:
        stalled.sendall(b"POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        began = time.monotonic()
        worker = threading.Thread(target=lambda: answers.append(request(f"{server.base}/v1/explain", data)[0]))
        worker.start()
        worker.join(30)
        assert answers == [200] and time.monotonic() - began < 1.5  # served while the other stalls
        reply = b""
        while b"}" not in reply and (chunk := stalled.recv(65536)):
            reply += chunk
    assert reply.split()[1] == b"408" and b"not received within 1.5 s" in reply


# -- explanations ----------------------------------------------------------------------------------------


def test_explain_endpoints_answer_maps_with_real_timings(server: Server, patched: dict[str, Path]) -> None:
    local = Explainer.load(patched["xml"])
    data = (PHOTOS / "coffee.jpg").read_bytes()
    (expected,) = local.explain(data, targets="top2", top_k=3)
    status, kind, body = request(f"{server.base}/v1/explain?top_k=3&targets=top2", data)
    assert status == 200 and kind == "application/json"
    answer = json.loads(body)
    assert [t["class_id"] for t in answer["top"]] == [p.class_id for p in expected.top]
    np.testing.assert_allclose(np.array(answer["saliency"]), expected.maps, atol=1e-4)
    assert answer["timings_ms"]["inference"] > 0
    status, kind, body = request(f"{server.base}/v1/explain?targets=top10&format=png", data)
    assert status == 200 and kind == "image/png" and Image.open(io.BytesIO(body)).size == (600, 400)
    status, kind, body = request(f"{server.base}/v1/explain?format=JPG", data)
    assert status == 200 and kind == "image/jpeg" and Image.open(io.BytesIO(body)).format == "JPEG"
    status, _, body = request(f"{server.base}/v1/explain?format=gif", data)
    assert status == 400 and "use json, png, jpeg or webp" in json.loads(body)["error"]
    # KServe's v1 explain verb: base64 images in the three spellings clients use
    encoded = base64.b64encode(data).decode()
    instances = [encoded, {"b64": encoded}, {"image_bytes": {"b64": encoded}}]
    body = json.dumps({"instances": instances, "parameters": {"targets": "top2", "top_k": 3}}).encode()
    status, kind, reply = request(f"{server.base}/v1/models/resnet_xai:explain", body)
    answer = json.loads(reply)
    assert status == 200 and answer["predictions"] == [expected.top[0].class_id] * 3
    for explanation in answer["explanations"]:
        np.testing.assert_allclose(np.array(explanation["saliency"]), expected.maps, atol=1e-4)
    for data, message in ((b'{"instances": ["%%%"]}', "not valid base64"), (b'{"inputs": []}', '"instances"')):
        status, _, reply = request(f"{server.base}/v1/models/resnet_xai:explain", data)
        assert status == 400 and message in json.loads(reply)["error"]
    status, _, reply = request(f"{server.base}/v1/models/other:explain", body)
    assert status == 404
    info = json.loads(request(f"{server.base}/v1/info")[2])
    assert info["model"] == "resnet_xai" and info["classes"] == 10 and info["max_batch_size"] == 4
    assert info["method"] == "recipro"


# -- the runtime as a client -----------------------------------------------------------------------------


def test_remote_explainer_matches_the_local_one(server: Server, patched: dict[str, Path]) -> None:
    url = f"{server.base}/v2/models/resnet_xai"
    remote, local = Explainer.load(url), Explainer.load(patched["xml"])
    assert remote.labels == list(LABELS) and remote.preprocessing == local.preprocessing
    photos = sorted(PHOTOS.glob("*.jpg"))
    for got, want in zip(remote.explain(photos, targets="top3"), local.explain(photos, targets="top3"), strict=True):
        assert [p.class_id for p in got.top] == [p.class_id for p in want.top]
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    streamed = list(remote.explain_many(photos * 2, jobs=3))
    assert [r.source for r in streamed] == [str(p) for p in photos * 2]
    with pytest.raises(OvxaiError, match="means nothing for a model URL") as caught:
        Explainer.load(url, device="GPU")
    assert "\n" not in str(caught.value)


# -- faults ------------------------------------------------------------------------------------------------


def test_memory_stays_bounded_and_nothing_is_lost_under_a_rude_load(server: Server) -> None:
    """REST and gRPC at concurrency 32 (16 + 16) for a few seconds, with clients that disconnect mid-request and
    one killed by SIGKILL; then a burst of large JSON requests past the in-flight budget. Every request that got
    an answer got the right one or a 503 to retry; RSS ends where it began (give or take the allocator)."""
    pid = server.proc.pid
    x = np.random.default_rng(3).random((1, 3, SIZE, SIZE), dtype=np.float32)
    expected = http_client(server).infer("resnet_xai", [tensor_input(triton_http, x)]).as_numpy("logits")
    body_head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                        "parameters": {"binary_data_size": x.nbytes}}]}).encode()  # fmt: skip
    outcomes: dict[str, int] = {"ok": 0, "busy": 0, "wrong": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + 4

    def count(key: str) -> None:
        with lock:
            outcomes[key] += 1

    def rest_client() -> None:
        client = http_client(server)
        while time.monotonic() < deadline:
            try:
                logits = client.infer("resnet_xai", [tensor_input(triton_http, x)]).as_numpy("logits")
                count("ok" if np.allclose(logits, expected, atol=1e-5) else "wrong")
            except InferenceServerException as exc:
                count("busy" if exc.status() == "503" else "wrong")

    def grpc_caller() -> None:
        client = grpc_client(server)
        while time.monotonic() < deadline:
            try:
                logits = client.infer("resnet_xai", [tensor_input(triton_grpc, x)]).as_numpy("logits")
                count("ok" if np.allclose(logits, expected, atol=1e-5) else "wrong")
            except InferenceServerException as exc:
                count("busy" if "UNAVAILABLE" in str(exc.status()) else "wrong")

    def rude_client() -> None:
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                head = b"POST /v2/models/resnet_xai/infer HTTP/1.1\r\nContent-Length: %d\r\n" % (
                    len(body_head) + x.nbytes
                )
                head += b"Inference-Header-Content-Length: %d\r\n\r\n" % len(body_head)
                conn.sendall(head + body_head + x.tobytes()[: x.nbytes // 2])
            time.sleep(0.05)

    killed = subprocess.Popen(
        [sys.executable, "-c", "import urllib.request, sys\nwhile True: urllib.request.urlopen(sys.argv[1], "
         "data=open(sys.argv[2], 'rb').read(), timeout=30).read()", f"{server.base}/v1/explain",
         str(PHOTOS / "coffee.jpg")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    before = rss_mib(pid)
    threads = [threading.Thread(target=t) for t in [rest_client] * 16 + [grpc_caller] * 16 + [rude_client] * 2]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        os.killpg(killed.pid, signal.SIGKILL)
        for thread in threads:
            thread.join(60)
    finally:
        stop([killed])
    assert outcomes["wrong"] == 0 and outcomes["ok"] > 32, outcomes
    # A burst of large JSON requests: admitted within the in-flight budget, the rest told to retry.
    big = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [24, 3, SIZE, SIZE],
                                  "data": np.round(np.random.default_rng(4).random(24 * 3 * SIZE * SIZE), 6).tolist()}],
                      "outputs": [{"name": "logits"}]}).encode()  # fmt: skip
    statuses: list[int] = []
    url = f"{server.base}/v2/models/resnet_xai/infer"
    burst = [threading.Thread(target=lambda: statuses.append(request(url, big)[0])) for _ in range(8)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(120)
    assert len(statuses) == 8 and set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    assert http_client(server).is_server_ready()
    grown = rss_mib(pid) - before
    assert grown < 64, f"RSS grew by {grown:.0f} MiB"


def test_a_deleted_model_file_changes_nothing(server: Server, model: Path) -> None:
    for suffix in (".xml", ".bin"):
        model.with_suffix(suffix).unlink()
    client = grpc_client(server)
    assert client.is_model_ready("resnet_xai")
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    assert client.infer("resnet_xai", [tensor_input(triton_grpc, x)]).as_numpy("logits").shape == (1, 10)


def test_taken_ports_bad_hosts_and_devices_are_one_line_before_anything_starts(
    server: Server, patched: dict[str, Path]
) -> None:
    model = str(patched["xml"])
    common = [*OVXAI, "serve", "--model", model]
    with socket.socket() as holder:  # a port held by a program that is not ovxai
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        other = holder.getsockname()[1]
        for argv, message in (
            ([*common, "--port", str(server.port), "--grpc-port", "0"], f"port {server.port} on 127.0.0.1 is taken"),
            ([*common, "--port", str(other), "--grpc-port", "0"], f"port {other} on 127.0.0.1 is taken"),
            ([*common, "--port", str(free_port()), "--grpc-port", str(server.grpc_port)], "--grpc-port"),
            ([*common, "--host", "no-such-host.invalid"], "is not an address or a name"),
            ([*common, "--host", "10.254.254.254", "--port", str(free_port())], "is not an address of this machine"),
            ([*common, "--device", "GPU", "--port", str(free_port())], "OpenVINO device 'GPU' is not available"),
            ([*common, "--replicas", "2", "--port", str(free_port())], "opens Ray's own ports on every interface"),
            ([*common, "--address", f"127.0.0.1:{free_port()}"], "no Ray cluster answers at 127.0.0.1"),
        ):
            began = time.monotonic()
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=60, env=os.environ | {"RAY_ADDRESS": ""}
            )
            err = done.stderr.strip()
            assert done.returncode == 2 and len(err.splitlines()) == 1 and message in err, (argv[-4:], err)
            assert err.startswith("ovxai serve: error: ") and time.monotonic() - began < 30
    assert http_client(server).is_server_ready()  # the first server still serves alone


def test_serve_refuses_a_model_without_preprocessing(patched: dict[str, Path], capsys: Any) -> None:
    err = cli_fails(capsys, "serve", "--model", str(patched["bare"]), "--port", str(free_port()))
    assert "records no preprocessing" in err and "--mean" in err
    err = cli_fails(capsys, "serve", "--model", str(patched["xml"]), "--max-batch-size", "0")
    assert "--max-batch-size 0 is not a whole number" in err


def test_every_port_is_on_loopback_and_sigterm_drains_the_requests_in_flight(patched: dict[str, Path]) -> None:
    running = serve(patched["xml"], None, "--host", "127.0.0.1")
    try:
        ports = listening({running.proc.pid})
        assert ports == {("127.0.0.1", running.port), ("127.0.0.1", running.grpc_port)}, ports
        x = np.random.default_rng(5).random((16, 3, SIZE, SIZE), dtype=np.float32)  # ~1 s of work queued
        results: list[Any] = []

        def one(module: Any) -> None:
            client = http_client(running) if module is triton_http else grpc_client(running)  # one per thread
            try:
                results.append(client.infer("resnet_xai", [tensor_input(module, x)]).as_numpy("logits").shape)
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=one, args=(module,)) for module in (triton_http, triton_grpc) * 6]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every request sent and accepted, most still queued behind the engine
        running.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert results == [(16, 10)] * 12, results
        assert running.proc.wait(60) == 0
        assert "ovxai serve: stopped" in "".join(running.lines.lines)
    finally:
        stop([running.proc])
