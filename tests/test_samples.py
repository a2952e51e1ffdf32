"""The samples as a user runs them: the HTTP service on loopback, the edge-device loop."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovxai import export
from ovxai.metadata import ModelInfo

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "samples/photos"


@pytest.fixture(scope="module")
def model(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, onnx_path = exported("resnet", "legacy")
    out = tmp_path_factory.mktemp("samples") / "resnet_xai.xml"
    info = ModelInfo(tuple(f"class {i}" for i in range(10)), (127.0,) * 3, (128.0,) * 3, True)
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
        status, kind, body = _post(f"{service}/explain?top_k=3&targets=2", photo.read_bytes())
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
