"""The samples as a user runs them: the HTTP service on loopback, the edge-device loop."""

from __future__ import annotations

import importlib.util
import io
import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ovxai import export
from ovxai.metadata import ModelInfo
from ovxai.runtime import Explainer, pictures

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "samples/photos"


@pytest.fixture(scope="module")
def model(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, onnx_path = exported("resnet", "legacy")
    out = tmp_path_factory.mktemp("samples") / "resnet_xai.xml"
    info = ModelInfo(tuple(f"class {i}" for i in range(10)), (127.0,) * 3, (128.0,) * 3, "rgb")
    return export(onnx_path, out, layer="layer4", info=info).files[0]


@pytest.fixture(scope="module")
def service(model: Path) -> Iterator[str]:
    """The service script started as a process on a free loopback port."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "samples/service.py"), "--model", str(model), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("serving"), line
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _post(url: str, data: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_service_answers_json_and_png(service: str) -> None:
    for photo in sorted(PHOTOS.glob("*.jpg")):
        status, kind, body = _post(f"{service}/explain?top_k=3&targets=top2", photo.read_bytes())
        assert status == 200 and kind == "application/json"
        answer = json.loads(body)
        assert len(answer["top"]) == 3 and [t["class_id"] for t in answer["targets"]] == [
            p["class_id"] for p in answer["top"][:2]
        ]
        maps = np.array(answer["saliency"])
        assert maps.shape == (2, 4, 4) and maps.min() >= 0 and maps.max() == pytest.approx(1.0, abs=1e-3)
    status, kind, body = _post(f"{service}/explain?format=png", (PHOTOS / "coffee.jpg").read_bytes())
    assert status == 200 and kind == "image/png"
    assert Image.open(io.BytesIO(body)).size == Image.open(PHOTOS / "coffee.jpg").size
    with urllib.request.urlopen(f"{service}/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok"}


def test_service_rejects_bad_requests_and_keeps_serving(service: str) -> None:
    data = (PHOTOS / "chelsea_cat.jpg").read_bytes()
    for body, query in ((data[: len(data) // 4], ""), (b"GIF89a not really", ""), (data, "?targets=3,99")):
        status, kind, answer = _post(f"{service}/explain{query}", body)
        assert status == 400 and kind == "application/json" and json.loads(answer)["error"]
    assert _post(f"{service}/nothing", data)[0] == 404
    assert _post(f"{service}/explain", data)[0] == 200  # still up after the bad ones


def test_edge_script_on_a_folder(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in PHOTOS.glob("*.jpg"):
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "samples/edge.py"), "--model", str(model), "--source", str(folder)]
    proc = subprocess.run([*argv, "--out", str(out), "--device", "CPU"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "images/s" in proc.stdout and "skipped" in proc.stderr and "broken.jpg" in proc.stderr
    assert len(list(out.glob("*_saliency.jpg"))) == 4


def _raw(url: str, data: bytes, done_sending: bool = False) -> tuple[int, dict[str, Any]]:
    """Send ``data`` as is on a fresh loopback connection; (status, JSON body) of the answer."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        if done_sending:
            conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head, "the connection was dropped without an answer"
    return int(head.split()[1]), json.loads(body)


def test_service_targets_spelling(service: str) -> None:
    data = (PHOTOS / "chelsea_cat.jpg").read_bytes()
    for query, ids in (("targets=2", [2]), ("targets=0", [0]), ("targets=7,3", [7, 3])):  # class ids, never top k
        status, _, body = _post(f"{service}/explain?{query}", data)
        assert status == 200 and [t["class_id"] for t in json.loads(body)["targets"]] == ids, query
    for query, message in (
        ("targets=2000", "class id 2000 is out of range; the model has classes 0..9"),
        ("targets=top0", "asks for no class"),
        ("targets=top11", "asks for 11 classes but the model has 10"),
        ("targets=-1", "neither topK nor class ids"),
        ("targets=all", "neither topK nor class ids"),
        ("top_k=0", "top_k '0' is not a count"),
        ("top_k=abc", "top_k 'abc' is not a count"),
        ("format=gif", "format 'gif' is unknown"),
        ("target=2", "unknown parameter 'target'"),
    ):
        status, kind, body = _post(f"{service}/explain?{query}", data)
        assert status == 400 and kind == "application/json" and message in json.loads(body)["error"], (query, body)


def test_service_content_length(service: str) -> None:
    """Every malformed length gets an answer; none bypasses the 20 MB cap."""
    start = b"POST /explain HTTP/1.1\r\nHost: x\r\n"
    for header, status, message in (
        (b"Content-Length: -1\r\n", 400, "is not a byte count"),
        (b"Content-Length: abc\r\n", 400, "is not a byte count"),
        (b"Content-Length: 12\r\nContent-Length: 13\r\n", 400, "is not a byte count"),
        (b"", 411, "no Content-Length"),
        (b"Transfer-Encoding: chunked\r\n", 411, "chunked"),
        (b"Content-Length: 0\r\n", 400, "empty body"),
        (b"Content-Length: 300000000\r\n", 413, "over 20971520 bytes"),  # answered without reading a byte
    ):
        got, answer = _raw(service, start + header + b"\r\n")
        assert got == status and message in answer["error"], (header, answer)
    got, answer = _raw(service, start + b"Content-Length: 100\r\n\r\n" + b"x" * 10, done_sending=True)
    assert got == 400 and "the body ended after 10 of 100 bytes" in answer["error"]
    assert _post(f"{service}/explain", (PHOTOS / "coffee.jpg").read_bytes())[0] == 200


def test_service_errors_name_no_memory_address(service: str) -> None:
    for body in (b"GIF89a not really", b"\x00" * 64, b"<svg></svg>"):
        status, _, answer = _post(f"{service}/explain", body)
        error = json.loads(answer)["error"]
        assert status == 400 and "0x" not in error and " object at " not in error, error


@pytest.fixture(scope="module")
def service_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ovxai_service_sample", ROOT / "samples/service.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def quick_service(model: Path, service_module: ModuleType) -> Iterator[str]:
    """The service in this process (to look inside), with short timeouts: 0.3 s idle, 0.8 s per request."""
    explainer = Explainer.load(model)
    server = service_module.make_server(explainer, "127.0.0.1", 0, {}, idle_timeout=0.3, request_timeout=0.8)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _closed_within(url: str, trickle: bytes, seconds: float) -> float:
    """Send ``trickle`` one byte every 0.1 s (never idle long) until the service closes; the time it took."""
    port = int(url.rsplit(":", 1)[1])
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as conn:
        for i in range(int(seconds / 0.1)):
            try:
                conn.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return time.monotonic() - start
            if select.select([conn], [], [], 0.1)[0]:
                try:
                    while conn.recv(65536):  # an answer (or none), then end of stream
                        pass
                except OSError:
                    pass
                return time.monotonic() - start
    raise AssertionError(f"the connection was still open after {seconds} s")


def test_service_drops_stalled_clients(quick_service: str) -> None:
    threads = threading.active_count()
    port = int(quick_service.rsplit(":", 1)[1])
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /explain HTTP/1.1\r\n")  # then silence
        assert conn.recv(65536) == b""  # closed by the idle timeout
    assert time.monotonic() - start < 3
    assert _closed_within(quick_service, b"X-Slow: header\r\n", 6) < 4  # headers trickled in: request deadline
    body = b"POST /explain HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"
    assert _closed_within(quick_service, body + b"x" * 200, 6) < 4  # a body trickled in
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads  # their threads ended
    assert _post(f"{quick_service}/explain", (PHOTOS / "coffee.jpg").read_bytes())[0] == 200


def test_service_png_resizes_only_the_drawn_map(quick_service: str, monkeypatch) -> None:
    resized: list[int] = []
    real = pictures.upsample

    def counting(maps: np.ndarray, height: int, width: int) -> np.ndarray:
        resized.append(len(maps))
        return real(maps, height, width)

    monkeypatch.setattr(pictures, "upsample", counting)
    status, kind, body = _post(
        f"{quick_service}/explain?targets=top10&format=png", (PHOTOS / "coffee.jpg").read_bytes()
    )
    assert status == 200 and kind == "image/png" and Image.open(io.BytesIO(body)).size == (600, 400)
    assert resized == [1]  # one map drawn, one map resized (not all 10)


def test_edge_script_names_outputs_by_relative_path(model: Path, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / "photos" / sub).mkdir(parents=True)
        (tmp_path / "photos" / sub / "cat.jpg").write_bytes((PHOTOS / "chelsea_cat.jpg").read_bytes())
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "samples/edge.py"), "--model", str(model), "--source", str(tmp_path / "photos")]
    proc = subprocess.run([*argv, "--out", str(out), "--device", "CPU"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == ["a__cat_saliency.jpg", "b__cat_saliency.jpg"]
