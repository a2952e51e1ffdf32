"""``ovxai serve`` on a real Ray instance (loopback only), the Open Inference Protocol through a stock
``tritonclient.http`` client, ``/v1/explain``, bad input, the remote ``Explainer``, the CLI as a process,
and a two-node cluster on one machine.

One Ray instance serves the module (started by the ``cluster`` fixture, stopped at its teardown); the
process tests start their own and check that they are gone afterwards. Ray's node address is 127.0.0.2:
Ray turns 127.0.0.1 into the machine's network address, but leaves the rest of the loopback range alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LABELS, MEAN, NETS, SCALE
from PIL import Image
from runners import run

from ovxai.cli import main
from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo, read_parameters
from ovxai.runtime import Explainer, pictures

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
triton_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException

from ovxai.serving.server import HttpError, ModelService, ServeOptions

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "samples/photos"
SIZE = NETS["resnet"][1]
INFO = ModelInfo(LABELS, MEAN, SCALE, "rgb")  # what the shared ``patched`` models carry
RAY_NODE_IP = "127.0.0.2"
OVXAI = [sys.executable, "-m", "ovxai.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray instance for the module, stopped at the end."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address=RAY_NODE_IP, log_to_driver=False)
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def server(cluster: None, patched: dict[str, Path]) -> str:
    """The IR served with batches of up to 4 and a 1.5 s body deadline; its base URL."""
    from ovxai.serving.server import deploy

    options = ServeOptions(str(patched["xml"]), max_batch_size=4, batch_wait_ms=20, read_timeout_s=1.5)
    url = deploy(options, "127.0.0.1", free_port())
    return url.split("/v2/")[0]


def client(base: str) -> Any:
    return triton_http.InferenceServerClient(base.removeprefix("http://"))


def photo_tensor(explainer: Explainer, name: str = "coffee.jpg") -> np.ndarray:
    return explainer.prepare(PHOTOS / name).tensor


def request(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def raw(base: str, data: bytes, shut: bool = False) -> tuple[int, bytes]:
    """Send bytes as they are on a fresh connection; (status, body) of the answer."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(data)
        if shut:
            conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            sizes = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if sizes and len(body) >= int(sizes[0]):
                break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head, "the connection was dropped without an answer"
    return int(head.split()[1]), body


def bomb_png(width: int, height: int) -> bytes:
    """A few bytes of PNG that claim width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# -- the protocol without Ray ---------------------------------------------------------------------------


def test_metadata_carries_tensors_and_the_models_metadata(patched: dict[str, Path]) -> None:
    for kind, platform in (("xml", "openvino"), ("onnx", "onnxruntime_onnx")):
        service = ModelService(ServeOptions(str(patched[kind]), backend="auto" if kind == "xml" else "onnxruntime"))
        meta = service.model_metadata()
        assert meta["name"] == "resnet_xai" and meta["platform"] == platform and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]
        outputs = {o["name"]: o for o in meta["outputs"]}
        assert outputs["logits"]["shape"] == [-1, 10] and outputs["saliency_map"]["datatype"] == "FP32"
        assert outputs["saliency_map"]["shape"][0] == -1 and outputs["saliency_map"]["shape"][2:] == [4, 4]
        info = read_parameters(meta["parameters"])
        assert (info.labels, info.mean, info.scale, info.channel_order) == (LABELS, INFO.mean, INFO.scale, "rgb")


def test_batched_run_gives_each_request_its_own_results(patched: dict[str, Path]) -> None:
    service = ModelService(ServeOptions(str(patched["onnx"]), backend="onnxruntime"))
    rng = np.random.default_rng(0)
    tensors = [rng.random((n, 3, SIZE, SIZE), dtype=np.float32) for n in (1, 2, 1)]
    together = service.run(tensors)
    for tensor, outputs in zip(tensors, together, strict=True):
        alone = run(patched["onnx"], tensor, "onnxruntime")
        assert outputs.keys() == alone.keys()
        for name in alone:
            np.testing.assert_allclose(outputs[name], alone[name], atol=1e-5)


def test_infer_requests_are_checked(patched: dict[str, Path]) -> None:
    service = ModelService(ServeOptions(str(patched["xml"])))
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)

    def body(spec: dict[str, Any], extra: bytes = b"", **request: Any) -> tuple[bytes, str]:
        head = json.dumps({"inputs": [spec], **request}).encode()
        return head + extra, str(len(head))

    good = {"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE]}
    binary = {**good, "parameters": {"binary_data_size": x.nbytes}}
    parsed = service.parse_infer(*body(binary, x.tobytes()))
    assert parsed.tensor.shape == (1, 3, SIZE, SIZE) and [b for _, b in parsed.outputs] == [False] * 3
    for (data, length), status, message in (
        ((b"\xff not json", None), 400, "is not JSON"),
        ((b'{"inputs": 5}', None), 400, "no 'inputs' list"),
        (body({**good, "name": "image", "data": [0]}), 400, "unknown input 'image'; the model's input is 'input'"),
        (body({**good, "datatype": "FP64", "data": [0]}), 400, "has datatype FP64; the model takes FP32"),
        (body({**good, "shape": [1, 3, 64, 64], "data": [0]}), 400, "the model takes [-1, 3, 128, 128]"),
        (body({**good, "shape": [0, 3, SIZE, SIZE], "data": []}), 400, "has shape"),
        (body({**good, "data": [1, 2, 3]}), 400, f"needs {x.size} numbers; the request has 3 numbers"),
        (body({**good, "data": ["a"] * x.size}), 400, "values that are not all numbers"),
        (body({**good, "data": [[1, 2], [3]]}), 400, "not a regular array"),
        (body({**good, "parameters": {"binary_data_size": 12}}, b"x" * 12), 400, "not binary_data_size 12"),
        (body(binary, x.tobytes()[:100]), 400, f"needs {x.nbytes} bytes of binary data; the body has 100"),
        (body(binary, x.tobytes() + b"tail"), 400, "4 bytes of binary data that no input claims"),
        (body({**good, "shape": [100000, 3, SIZE, SIZE]}), 413, "is over 20971520 bytes"),
        (body(binary, x.tobytes(), outputs=[{"name": "scores"}]), 400, "unknown output 'scores'"),
        (
            body(binary, x.tobytes(), outputs=[{"name": "logits", "parameters": {"classification": 3}}]),
            400,
            "not supported",
        ),
        ((b"{}", "-1"), 400, "Inference-Header-Content-Length '-1'"),
        ((b"{}", "99"), 400, "is not a length within the body"),
    ):
        with pytest.raises(HttpError) as caught:
            service.parse_infer(data, length)
        assert caught.value.status == status and message in str(caught.value), (message, str(caught.value))


def test_png_resizes_only_the_drawn_map(patched: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    service = ModelService(ServeOptions(str(patched["xml"])))
    resized: list[int] = []
    real = pictures.upsample

    def counting(maps: np.ndarray, height: int, width: int) -> np.ndarray:
        resized.append(len(maps))
        return real(maps, height, width)

    monkeypatch.setattr(pictures, "upsample", counting)
    batch = service.prepare_image((PHOTOS / "coffee.jpg").read_bytes())
    (outputs,) = service.run([batch.tensor])
    data, kind = service.explain_answer(batch, outputs, "top10", 5, "png")
    assert kind == "image/png" and Image.open(io.BytesIO(data)).size == (600, 400)
    assert resized == [1]  # one map drawn, one map resized (not all 10)


# -- the Open Inference Protocol, served ----------------------------------------------------------------


@pytest.mark.slow
def test_tritonclient_with_binary_and_json_tensors(server: str, patched: dict[str, Path]) -> None:
    tc = client(server)
    assert tc.is_server_live() and tc.is_server_ready() and tc.is_model_ready("resnet_xai")
    assert tc.is_model_ready("resnet_xai", "1") and not tc.is_model_ready("other")
    assert "binary_tensor_data" in tc.get_server_metadata()["extensions"]
    meta = tc.get_model_metadata("resnet_xai")
    assert meta["inputs"][0]["shape"] == [-1, 3, SIZE, SIZE]
    x = np.random.default_rng(1).random((2, 3, SIZE, SIZE), dtype=np.float32)
    direct = run(patched["xml"], x, "openvino")
    for binary_in in (True, False):
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary_in)
        asked = [
            triton_http.InferRequestedOutput("logits", binary_data=False),
            triton_http.InferRequestedOutput("saliency_map", binary_data=True),
        ]
        for outputs, version in ((None, ""), (asked, "1")):  # None: the client asks for all, as binary
            result = tc.infer("resnet_xai", [tensor], outputs=outputs, model_version=version)
            got = {o["name"]: o for o in result.get_response()["outputs"]}
            assert ("data" in got["logits"]) == (outputs is not None)  # JSON where asked for
            np.testing.assert_allclose(result.as_numpy("logits"), direct["logits"], atol=1e-5)
            np.testing.assert_allclose(result.as_numpy("saliency_map"), direct["saliency_map"], atol=1e-5)
    with pytest.raises(InferenceServerException, match="unknown model 'other'; this server serves 'resnet_xai'"):
        tc.get_model_metadata("other")


@pytest.mark.slow
def test_bad_tensors_are_refused_and_the_server_keeps_serving(server: str) -> None:
    tc = client(server)
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    for name, array, datatype, message in (
        ("image", x, "FP32", "unknown input 'image'"),
        ("input", x[:, :, :64, :64], "FP32", "has shape [1, 3, 64, 64]"),
        ("input", x.astype(np.float64), "FP64", "has datatype FP64"),
    ):
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException, match=message.replace("[", r"\[")) as caught:
            tc.infer("resnet_xai", [tensor])
        assert caught.value.status() == "400"
    status, _, body = request(f"{server}/v2/models/resnet_xai/infer", b"\x00garbage")
    assert status == 400 and json.loads(body) == {"error": "the request is not JSON; send a v2 inference request"}
    status, _, body = request(f"{server}/v2/nowhere")
    assert status == 404 and set(json.loads(body)) == {"error"}
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    assert tc.infer("resnet_xai", [tensor]).as_numpy("logits").shape == (1, 10)


# -- /v1/explain ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_explain_answers_json_and_png(server: str, patched: dict[str, Path]) -> None:
    local = Explainer.load(patched["xml"])
    data = (PHOTOS / "coffee.jpg").read_bytes()
    status, kind, body = request(f"{server}/v1/explain?top_k=3&targets=top2", data)
    assert status == 200 and kind == "application/json"
    answer = json.loads(body)
    (expected,) = local.explain(data, targets="top2", top_k=3)
    assert [t["class_id"] for t in answer["top"]] == [p.class_id for p in expected.top]
    assert answer["top"][0]["label"] == expected.top[0].label
    np.testing.assert_allclose(np.array(answer["saliency"]), expected.maps, atol=1e-4)  # rounded to 4 places
    status, kind, body = request(f"{server}/v1/explain?targets=top10&format=png", data)
    assert status == 200 and kind == "image/png"
    assert Image.open(io.BytesIO(body)).size == Image.open(PHOTOS / "coffee.jpg").size
    info = json.loads(request(f"{server}/v1/info")[2])
    assert info["model"] == "resnet_xai" and info["classes"] == 10 and info["max_batch_size"] == 4
    assert info["method"] == "recipro"


@pytest.mark.slow
def test_explain_refuses_bad_input_with_one_line_json(server: str) -> None:
    start = b"POST /v1/explain HTTP/1.1\r\nHost: x\r\n"
    for data, status, message in (
        (start + b"Content-Length: 26214400\r\n\r\n", 413, "over 20971520 bytes"),  # answered before reading
        (start + b"\r\n", 411, "no Content-Length"),
        (start + b"Transfer-Encoding: chunked\r\n\r\n", 411, "chunked"),
        (start + b"Content-Length: 0\r\n\r\n", 400, "empty body"),
        (start + b"Content-Length: 17\r\n\r\nGIF89a not really", 400, "not a usable image"),
    ):
        got, body = raw(server, data)
        assert got == status and message in json.loads(body)["error"], (data[:60], body)
        assert len(body.splitlines()) == 1
    for header in (b"Content-Length: -1\r\n", b"Content-Length: abc\r\n"):  # Ray Serve's HTTP server refuses these
        assert raw(server, start + header + b"\r\n")[0] == 400
    bomb = bomb_png(9000, 9000)
    assert len(bomb) < 200
    for query, data, message in (
        ("", bomb, "has 9000 x 9000 pixels, over the limit of 40,000,000"),
        ("", b"\x00" * 64, "not a usable image"),
        ("?targets=top11", b"x", "asks for 11 classes but the model has 10"),
        ("?top_k=0", b"x", "top_k '0' is not a count"),
        ("?format=gif", b"x", "format 'gif' is unknown"),
        ("?target=2", b"x", "unknown parameter 'target'"),
    ):
        status, kind, body = request(f"{server}/v1/explain{query}", data)
        error = json.loads(body)["error"]
        assert status == 400 and kind == "application/json" and message in error, (query, error)
        assert "0x" not in error and "\n" not in error
    assert request(f"{server}/v1/explain", (PHOTOS / "rocket.jpg").read_bytes())[0] == 200


@pytest.mark.slow
def test_a_stalled_body_gets_408_and_blocks_no_one(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    data = (PHOTOS / "coffee.jpg").read_bytes()
    answers: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
        stalled.sendall(b"POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        start = time.monotonic()
        worker = threading.Thread(target=lambda: answers.append(request(f"{server}/v1/explain", data)[0]))
        worker.start()
        worker.join(30)
        assert answers == [200] and time.monotonic() - start < 1.5  # served while the other stalls
        reply = b""
        while b"}" not in reply and (chunk := stalled.recv(65536)):
            reply += chunk
    assert reply.split()[1] == b"408" and b"not received within 1.5 s" in reply


# -- the runtime as a client ----------------------------------------------------------------------------


@pytest.mark.slow
def test_remote_explainer_matches_the_local_one(server: str, patched: dict[str, Path], tmp_path: Path) -> None:
    url = f"{server}/v2/models/resnet_xai"
    remote, local = Explainer.load(url), Explainer.load(patched["xml"])
    assert remote.labels == list(LABELS) and remote.preprocessing == local.preprocessing
    assert "model metadata" in remote.describe_preprocessing()
    photos = sorted(PHOTOS.glob("*.jpg"))
    for got, want in zip(remote.explain(photos, targets="top3"), local.explain(photos, targets="top3"), strict=True):
        assert [p.class_id for p in got.top] == [p.class_id for p in want.top]
        assert got.top[0].label == want.top[0].label
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        assert got.overlay(1).size == want.image.size
    streamed = list(remote.explain_many(photos * 2, jobs=3))
    assert [r.source for r in streamed] == [str(p) for p in photos * 2]
    assert main(["explain", "--model", url, "--image", str(PHOTOS), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["model"] == url and len(summary["images"]) == len(photos)


@pytest.mark.slow
def test_remote_explainer_errors_are_one_line(server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v2/models/resnet_xai"
    for url, message in (
        (f"{server}/v2/models/other", "unknown model 'other'"),
        (dead, "cannot reach 127.0.0.1"),
        (f"{server}/v1/explain", "is not a model URL"),
    ):
        with pytest.raises(OvxaiError, match=message) as caught:
            Explainer.load(url)
        assert "\n" not in str(caught.value)
    with pytest.raises(OvxaiError, match="cannot run a model URL"):
        Explainer.load(f"{server}/v2/models/resnet_xai", backend="openvino")


@pytest.mark.slow
def test_remote_inference_is_retried_only_where_the_way_failed(server: str) -> None:
    """A 503, a 500 that is not the server's JSON (a replica died mid-request) or a dropped connection is
    tried again; an answer of the server's own (400, a JSON 500) is not."""
    session = Explainer.load(f"{server}/v2/models/resnet_xai").session
    client_ = session._client()  # this thread's tritonclient
    real, calls = client_.infer, []
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    for failure, retried in (
        (InferenceServerException("unavailable", status="503"), True),
        (InferenceServerException("Internal Server Error", status="500", debug_details="Internal Server Error"), True),
        (ConnectionResetError(104, "reset"), True),
        (InferenceServerException("internal error; see the server's log", status="500"), False),
        (InferenceServerException("bad shape", status="400"), False),
    ):
        calls.clear()

        def flaky(*args: Any, failure: Exception = failure, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise failure
            return real(*args, **kwargs)

        session._local.client = client_  # a dropped connection made the session start a new client
        client_.infer = flaky
        if retried:  # a dropped connection is tried again on a new client (and connection)
            assert session.infer(x)["logits"].shape == (1, 10)
            assert len(calls) == 2 or (len(calls) == 1 and session._local.client is not client_)
        else:
            with pytest.raises(OvxaiError):
                session.infer(x)
            assert len(calls) == 1


# -- the command as a process ---------------------------------------------------------------------------


def _ray_env(**extra: str) -> dict[str, str]:
    """A child's environment: token authentication with a fresh token (nothing written to ~/.ray), no
    inherited cluster address, no usage reporting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env | extra


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (whatever session or group Ray put it in)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _stop(procs: list[subprocess.Popen[str]], others: set[int], grace: float) -> None:
    """SIGTERM each process group we started, SIGKILL what is left after ``grace`` s (and ``others``, by PID)."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (any(p.poll() is None for p in procs) or _alive(others)):
        time.sleep(0.2)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for pid in _alive(others):
        os.kill(pid, signal.SIGKILL)


def _wait_for(proc: subprocess.Popen[str], text: str, seconds: float) -> str:
    """The first stdout line holding ``text`` (the process's stdout is read on a thread)."""
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hit = next((line for line in lines if text in line), None)
        if hit:
            return hit
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no '{text}' within {seconds} s; output: {''.join(lines)[-2000:]}")


def test_serve_refuses_a_model_without_preprocessing(patched: dict[str, Path], capsys) -> None:
    assert main(["serve", "--model", str(patched["bare"]), "--port", "1"]) == 2  # before Ray is started
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "records no preprocessing" in err and "--mean" in err, err
    assert main(["serve", "--model", str(patched["xml"]), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size 0 is not a whole number" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_command_stops_its_ray_on_sigterm(patched: dict[str, Path]) -> None:
    port = free_port()
    argv = [*OVXAI, "serve", "--model", str(patched["bare"]), "--mean", "0", "--scale", "1", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--name", "plain", "--node-ip-address", RAY_NODE_IP, "--max-batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_ray_env(), start_new_session=True,
    )  # fmt: skip
    ray_processes: set[int] = set()
    try:
        line = _wait_for(proc, "serving plain", 120)
        assert f"http://127.0.0.1:{port}/v2/models/plain" in line
        tc = client(f"http://127.0.0.1:{port}")
        assert tc.is_model_ready("plain")
        assert read_parameters(tc.get_model_metadata("plain")["parameters"]).mean == (0.0, 0.0, 0.0)
        ray_processes = _descendants(proc.pid)
        assert len(ray_processes) > 3  # Ray's processes run under it
        proc.send_signal(signal.SIGTERM)  # as `kill PID` does; its group is for the clean-up below
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 20
        while _alive(ray_processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(ray_processes), "Ray processes outlived ovxai serve"
    finally:
        _stop([proc], ray_processes, grace=5)


@pytest.mark.slow
def test_two_node_cluster_spreads_replicas(patched: dict[str, Path]) -> None:
    """`ray start --head` and a second `ray start --address` on loopback, `ovxai serve --address` with two
    replicas of one CPU each on nodes of one CPU: one replica per node. Every process is ours to stop."""
    gcs, http = free_port(), free_port()
    env = _ray_env(RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING="0")  # else the head's proxy keeps to its node
    common = ["--node-ip-address", RAY_NODE_IP, "--num-cpus", "1", "--disable-usage-stats", "--block"]
    ray_cli = [str(Path(sys.executable).with_name("ray"))]
    procs: list[subprocess.Popen[str]] = []

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, text=True, env=env, start_new_session=True, **kwargs)
        procs.append(proc)
        return proc

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    address = f"{RAY_NODE_IP}:{gcs}"
    # `ray start --head` records its address for later `ray.init()` calls; a head stopped by force leaves
    # it behind. Put back what was there before, unless another cluster has written it since.
    latest = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray" / "ray_current_cluster"
    before = latest.read_text() if latest.is_file() else None
    try:
        head = start([*ray_cli, "start", "--head", "--port", str(gcs), "--include-dashboard", "false",
                      "--dashboard-agent-listen-port", str(free_port()), *common], **quiet)  # fmt: skip
        _wait_for_gcs(head, address)
        start([*ray_cli, "start", "--address", address, "--dashboard-agent-listen-port", str(free_port()), *common],
              **quiet)  # fmt: skip
        serving = start(
            [*OVXAI, "serve", "--model", str(patched["xml"]), "--address", address, "--port", str(http),
             "--replicas", "2", "--replica-cpus", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(serving, "serving resnet_xai", 150)
        base = f"http://127.0.0.1:{http}"
        nodes = {json.loads(request(f"{base}/v1/info")[2])["node"] for _ in range(40)}
        assert len(nodes) == 2, nodes  # each node runs one replica
        remote = Explainer.load(f"{base}/v2/models/resnet_xai")
        assert remote.explain(PHOTOS / "coffee.jpg")[0].top[0].label.startswith("thing")
        serving.send_signal(signal.SIGTERM)  # removes its application; the cluster stays
        assert serving.wait(60) == 0
        assert head.poll() is None
    finally:
        _stop(procs, {pid for p in procs for pid in _descendants(p.pid)}, grace=5)
        if latest.is_file() and latest.read_text().strip() == address:
            if before is None:
                latest.unlink()
            else:
                latest.write_text(before)
    assert all(p.poll() is not None for p in procs)


def _wait_for_gcs(head: subprocess.Popen[str], address: str, seconds: float = 60) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            time.sleep(2)  # the GCS listens before it serves; give the head's raylet its start
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"no Ray head at {address} within {seconds} s")
