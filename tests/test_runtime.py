"""ovxai.runtime: loading, preprocessing from metadata, image handling, pictures, errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import NETS
from PIL import Image
from runners import run

from ovxai import export
from ovxai.cli import main
from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo
from ovxai.runtime import Explainer, ImageError, Preprocessing
from ovxai.runtime.images import load_rgb
from ovxai.runtime.pictures import COLORMAPS, colorize

PHOTOS = Path(__file__).resolve().parents[1] / "samples/photos"
SIZE = NETS["resnet"][1]
LABELS = tuple(f"thing {i}, kind {i}" for i in range(10))
INFO = ModelInfo(LABELS, (120.0, 110.0, 100.0), (60.0, 60.0, 60.0), True)


@pytest.fixture(scope="module")
def patched(exported, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ResNet exported once as IR and once as ONNX, with labels and preprocessing inside."""
    _, onnx_path = exported("resnet", "legacy")
    folder = tmp_path_factory.mktemp("patched")
    return {
        s: export(onnx_path, folder / f"resnet_xai.{s}", layer="layer4", fp16=False, info=INFO).files[0]
        for s in ("xml", "onnx")
    }


def _direct(model: Path, image: Image.Image, backend: str) -> dict[str, np.ndarray]:
    """The reference: preprocess by hand as the metadata says, run the model directly."""
    pixels = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    x = ((pixels - [120, 110, 100]) / 60).transpose(2, 0, 1)[None].astype(np.float32)
    return run(model, x, backend)


@pytest.mark.parametrize(("kind", "backend"), [("xml", "openvino"), ("onnx", "onnxruntime"), ("onnx", "openvino")])
def test_explain_matches_the_model(patched, kind, backend) -> None:
    explainer = Explainer.load(patched[kind], backend=backend)
    assert explainer.labels == list(LABELS)  # verbatim, commas and spaces included
    assert explainer.preprocessing == Preprocessing((SIZE, SIZE), (120.0, 110.0, 100.0), (60.0, 60.0, 60.0), True)
    photo = Image.open(PHOTOS / "coffee.jpg").convert("RGB")
    (result,) = explainer.explain(PHOTOS / "coffee.jpg", targets=3, top_k=4)
    direct = _direct(patched[kind], photo, "onnxruntime" if kind == "onnx" else "openvino")
    order = np.argsort(-direct["logits"][0])
    assert [p.class_id for p in result.top] == list(order[:4])
    assert [p.class_id for p in result.targets] == list(order[:3])
    assert result.top[0].label == LABELS[order[0]] and abs(sum(result.scores) - 1) < 1e-6
    np.testing.assert_allclose(result.maps, direct["saliency_map"][0, order[:3]], atol=1e-5)
    assert result.upsampled.shape == (3, photo.height, photo.width)
    assert result.overlay(1).size == photo.size
    assert set(result.timings) == {"load", "preprocess", "inference", "postprocess"}


def test_targets_and_mixed_inputs(patched) -> None:
    explainer = Explainer.load(patched["xml"])
    photo = Image.open(PHOTOS / "rocket.jpg")
    inputs = [PHOTOS / "chelsea_cat.jpg", photo, np.asarray(photo.convert("RGB"))]  # different sizes, kinds
    results = explainer.explain(inputs, targets=[7, 2])
    assert results[0].source.endswith("chelsea_cat.jpg") and results[2].source == "<array>"
    assert all([t.class_id for t in r.targets] == [7, 2] for r in results)
    np.testing.assert_allclose(results[1].maps, results[2].maps, atol=1e-6)  # same pixels, two input kinds
    with pytest.raises(OvxaiError, match="out of range"):
        explainer.explain(photo, targets=[10])
    with pytest.raises(OvxaiError, match="unknown targets"):
        explainer.explain(photo, targets="all")


def test_async_equals_sync(patched) -> None:
    explainer = Explainer.load(patched["xml"])
    files = sorted(PHOTOS.glob("*.jpg")) * 2
    sync = explainer.explain(files)
    for backend in ("openvino", "onnxruntime"):
        model = patched["xml" if backend == "openvino" else "onnx"]
        streamed = list(Explainer.load(model, backend=backend).explain_many(files, jobs=3))
        assert [r.source for r in streamed] == [r.source for r in sync]
        for a, b in zip(streamed, sync, strict=True):
            np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)


def test_static_batch_model_is_padded(exported, tmp_path) -> None:
    _, onnx_path = exported("resnet", "legacy")
    model = export(onnx_path, tmp_path / "b2.xml", layer="layer4", static_batch=2, fp16=False, info=INFO).files[0]
    files = sorted(PHOTOS.glob("*.jpg"))[:3]  # 3 images through a batch-2 model
    fixed = Explainer.load(model).explain(files)
    assert len(fixed) == 3
    ours = Explainer.load(model).explain(files[2])[0]
    np.testing.assert_allclose(fixed[2].maps, ours.maps, atol=1e-5)


def test_image_modes_and_orientation(tmp_path) -> None:
    rgb = Image.open(PHOTOS / "chelsea_cat.jpg").convert("RGB")  # 451 x 300
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    rgb.save(tmp_path / "sideways.jpg", exif=exif)
    assert load_rgb(tmp_path / "sideways.jpg")[1].size == (300, 451)
    rgb.convert("L").save(tmp_path / "gray.png")
    rgb.convert("RGBA").save(tmp_path / "alpha.png")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("gray.png", "alpha.png", "cmyk.jpg", "deep.png"):
        image = load_rgb(tmp_path / name)[1]
        assert image.mode == "RGB" and image.size == rgb.size, name
    deep = np.asarray(load_rgb(tmp_path / "deep.png")[1])[..., 0]
    assert (
        abs(int(deep.astype(int).mean()) - int(np.asarray(rgb.convert("L")).mean())) <= 1
    )  # 16 bit scaled, not clipped


def test_bad_images(tmp_path) -> None:
    (tmp_path / "text.jpg").write_text("not an image")
    data = (PHOTOS / "coffee.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    Image.new("1", (12000, 9000)).save(tmp_path / "bomb.png")  # tiny file, 108 megapixels
    with pytest.raises(ImageError, match="not a usable image"):
        load_rgb(tmp_path / "text.jpg")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_rgb(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_rgb(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="not an HWC image"):
        load_rgb(np.zeros((3, 32, 32), np.uint8))


def test_load_errors(patched, exported, tmp_path, monkeypatch) -> None:
    with pytest.raises(OvxaiError, match=r"device 'TPU' is not available; choose one of: CPU"):
        Explainer.load(patched["xml"], device="TPU")
    _, plain = exported("resnet", "legacy")
    with pytest.raises(OvxaiError, match=r"no 'saliency_map' output.*ovxai export"):
        Explainer.load(plain)
    with pytest.raises(OvxaiError, match="provider FooExecutionProvider is not available"):
        Explainer.load(patched["onnx"], backend="onnxruntime", providers=["FooExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(OvxaiError, match="pip install onnxruntime"):
        Explainer.load(patched["onnx"], backend="onnxruntime")


def test_colormaps() -> None:
    for lut in COLORMAPS.values():
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    low, middle, high = colorize(np.array([[0.0, 0.5, 1.0]]))[0].astype(int)
    assert low.sum() < 120 and middle[1] > 200 > high[1] and high[0] > 128 > high[2]  # dark, green, red
    np.testing.assert_array_equal(colorize(np.array([[0.0, 0.5, 1.0]]), "gray")[0, :, 0], [0, 128, 255])


def test_runtime_imports_no_framework(patched) -> None:
    code = (
        "import sys; from ovxai.runtime import Explainer; "
        f"r = Explainer.load({str(patched['xml'])!r}).explain({str(PHOTOS / 'coffee.jpg')!r})[0]; r.overlay(); "
        "print(' '.join(m for m in ('torch', 'onnx', 'cv2', 'matplotlib') if m in sys.modules) or 'clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "clean"


def test_cli_explain(patched, tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg"))[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(["explain", "-m", str(patched["xml"]), "-i", str(folder), "-o", str(out), "--explain", "2"])
    assert code == 1  # finished, but one image was skipped
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and "broken.jpg" in captured.err
    report = json.loads((out / "summary.json").read_text())
    assert len(report["images"]) == 2 and len(report["skipped"]) == 1
    assert all(len(entry["overlays"]) == 2 and Path(entry["overlays"][0]).is_file() for entry in report["images"])
    assert (out / "contact_sheet.png").is_file()
    assert main(["explain", "-m", str(patched["xml"]), "-i", str(folder / "broken.jpg"), "-o", str(out)]) == 2
    assert "is not a usable image" in capsys.readouterr().err


def test_upsampling_matches_pillow_bilinear() -> None:
    from ovxai.runtime.pictures import upsample

    saliency = np.random.default_rng(0).random((2, 7, 7), dtype=np.float32)
    for height, width in ((300, 451), (224, 224), (7, 7), (9, 700)):
        want = [np.asarray(Image.fromarray(m, mode="F").resize((width, height), Image.Resampling.BILINEAR))
                for m in saliency]  # fmt: skip
        np.testing.assert_allclose(upsample(saliency, height, width), np.stack(want), atol=1e-6)
