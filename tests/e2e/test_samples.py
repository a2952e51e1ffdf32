"""The samples as a user runs them: the Quick start demo and the edge-device loop. (The HTTP service is ``ovxai serve``:
tests/e2e/test_serve.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ovxai import export
from ovxai.metadata import ModelInfo

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "samples/photos"


@pytest.fixture(scope="module")
def model(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, onnx_path = exported("resnet", "legacy")
    out = tmp_path_factory.mktemp("samples") / "resnet_xai.xml"
    info = ModelInfo(tuple(f"class {i}" for i in range(10)), (127.0,) * 3, (128.0,) * 3, "rgb")
    return export(onnx_path, out, layer="layer4", info=info).files[0]


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


def test_edge_script_names_outputs_by_relative_path(model: Path, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / "photos" / sub).mkdir(parents=True)
        (tmp_path / "photos" / sub / "cat.jpg").write_bytes((PHOTOS / "chelsea_cat.jpg").read_bytes())
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "samples/edge.py"), "--model", str(model), "--source", str(tmp_path / "photos")]
    proc = subprocess.run([*argv, "--out", str(out), "--device", "CPU"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == ["a__cat_saliency.jpg", "b__cat_saliency.jpg"]


def test_the_quick_start_demo_runs(tmp_path: Path) -> None:
    """README's first command ends in samples/demo.py: the real EfficientNet-Lite0 built, exported and explained."""
    pytest.importorskip("efficientnet_lite_pytorch")
    demo = [sys.executable, str(ROOT / "samples/demo.py"), str(PHOTOS / "chelsea_cat.jpg"), "--out", str(tmp_path)]
    done = subprocess.run(demo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Egyptian cat" in done.stdout and (tmp_path / "contact_sheet.png").is_file()
    assert (tmp_path / "efficientnet_lite0_xai.xml").is_file() and (tmp_path / "efficientnet_lite0_xai.onnx").is_file()
