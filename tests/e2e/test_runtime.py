"""ovxai.runtime: loading, preprocessing from metadata, image handling, pictures, errors, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS, MEAN, NETS, SCALE
from PIL import Image
from runners import cli_fails, run

from ovxai import export
from ovxai.cli import main
from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo
from ovxai.runtime import Explainer, ImageError, Preprocessing, backends, named_image_files, parse_targets, pictures
from ovxai.runtime.images import load_rgb
from ovxai.runtime.pictures import COLORMAPS, upsample

PHOTOS = Path(__file__).resolve().parents[2] / "samples/photos"
SIZE = NETS["resnet"][1]
INFO = ModelInfo(LABELS, MEAN, SCALE, "rgb")  # what the shared ``patched`` models carry


def _direct(model: Path, image: Image.Image, backend: str) -> dict[str, np.ndarray]:
    """The reference: preprocess by hand as the metadata says, run the model directly."""
    pixels = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    x = ((pixels - [120, 110, 100]) / 60).transpose(2, 0, 1)[None].astype(np.float32)
    return run(model, x, backend)


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``ovxai explain``, expect exit 2 and exactly one line on stderr, return that line."""
    return cli_fails(capsys, "explain", *argv)


# -- predictions and maps -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "backend"), [("xml", "openvino"), ("onnx", "onnxruntime"), ("onnx", "openvino")])
def test_explain_matches_the_model(patched, kind, backend) -> None:
    explainer = Explainer.load(patched[kind], backend=backend)
    assert explainer.labels == list(LABELS)  # verbatim, commas and spaces included
    assert explainer.preprocessing == Preprocessing((SIZE, SIZE), (120.0, 110.0, 100.0), (60.0, 60.0, 60.0), "rgb")
    assert explainer.num_classes == 10
    photo = Image.open(PHOTOS / "coffee.jpg").convert("RGB")
    (result,) = explainer.explain(PHOTOS / "coffee.jpg", targets="top3", top_k=4)
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
    numpy_ids = explainer.explain(photo, targets=[np.int64(7), np.int32(2)])[0]  # numpy integers are ids too
    assert [t.class_id for t in numpy_ids.targets] == [7, 2]
    assert [t.class_id for t in explainer.explain(photo, targets=np.array([3]))[0].targets] == [3]
    best = explainer.explain(photo, targets="top10", top_k=50)[0]  # k = K is fine; top_k stops at K
    assert len(best.targets) == 10 and len(best.top) == 10


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (2, r"targets= 2 is ambiguous; use 'top2' for the 2 best classes or \[2\] for class id 2"),
        (np.int64(3), r"targets= 3 is ambiguous; use 'top3'"),
        (True, "is not a choice of classes"),
        ("top0", "asks for no class"),
        ("top11", "asks for 11 classes but the model has 10; use at most 'top10'"),
        ("all", "unknown targets"),
        ("5", "unknown targets"),  # text spellings are the CLI's: parse_targets
        ([10], r"class id 10 is out of range; the model has classes 0\.\.9"),
        ([3, -1], "class id -1 is out of range"),
        ([], "names no class"),
        ([2.0], "not a class id"),
        ([3, 3], "listed twice"),
    ],
)
def test_bad_targets_are_refused_before_inference(patched, targets, message, monkeypatch) -> None:
    explainer = Explainer.load(patched["xml"])

    def no_inference(*args: object) -> None:
        raise AssertionError("inference started")

    monkeypatch.setattr(explainer.session, "infer", no_inference)
    monkeypatch.setattr(explainer.session, "infer_many", no_inference)
    with pytest.raises(OvxaiError, match=message):
        explainer.explain(PHOTOS / "coffee.jpg", targets=targets)
    with pytest.raises(OvxaiError, match=message):
        explainer.explain_many([PHOTOS / "coffee.jpg"], targets=targets)  # at the call, not at the first next()
    for top_k in (0, -1):
        with pytest.raises(OvxaiError, match=r"top_k= -?\d reports no prediction"):
            explainer.explain_many([PHOTOS / "coffee.jpg"], top_k=top_k)
    with pytest.raises(OvxaiError, match="jobs= 0 runs no request"):
        explainer.explain_many([PHOTOS / "coffee.jpg"], jobs=0)


def test_target_spelling() -> None:
    assert parse_targets("top5") == "top5" and parse_targets(" TOP1 ") == "top1"
    assert parse_targets("281") == [281] and parse_targets("281, 285") == [281, 285]
    for text in ("", "5k", "top", "-1", "1,,2", "top-1", "1.5"):
        with pytest.raises(OvxaiError, match="neither topK nor class ids"):
            parse_targets(text)


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
    one = list(explainer.explain_many(str(files[0])))  # a path is one image, not a sequence of characters
    assert len(one) == 1 and one[0].source == str(files[0])


def test_public_steps_equal_explain(patched) -> None:
    explainer = Explainer.load(patched["xml"])
    files = sorted(PHOTOS.glob("*.jpg"))[:2]
    batch = explainer.prepare(files)
    assert len(batch) == 2 and batch.tensor.shape == (2, 3, SIZE, SIZE)
    assert all(t["load"] > 0 and t["preprocess"] > 0 for t in batch.timings)
    stepwise = explainer.postprocess(batch, explainer.infer(batch), targets=[4, 1], top_k=3, inference_s=0.01)
    whole = explainer.explain(files, targets=[4, 1], top_k=3)
    for a, b in zip(stepwise, whole, strict=True):
        assert a.top == b.top and a.targets == b.targets
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)
    assert stepwise[0].timings["inference"] == pytest.approx(0.005)
    with pytest.raises(OvxaiError, match="ambiguous"):
        explainer.postprocess(batch, explainer.infer(batch), targets=1)


def test_timings_measure_each_phase(patched, tmp_path) -> None:
    """Inference time is the requests' own: not the wait for the next images nor the queue wait."""
    import time

    photo = sorted(PHOTOS.glob("*.jpg"))[0]
    delay = 1.0  # the caller takes a second to hand over each image; a tiny model infers in milliseconds

    def slow_stream():  # type: ignore[no-untyped-def]
        for _ in range(3):
            time.sleep(delay)
            yield photo

    for backend, model in (("openvino", patched["xml"]), ("onnxruntime", patched["onnx"])):
        for result in Explainer.load(model, backend=backend).explain_many(slow_stream(), jobs=2):
            t = result.timings
            assert set(t) == {"load", "preprocess", "inference", "postprocess"}
            assert t["preprocess"] > 0 and t["postprocess"] > 0 and t["inference"] > 0, t
            assert t["inference"] < delay / 2 and t["load"] < delay / 2, (backend, t)  # the wait is in neither


def test_static_batch_model_is_padded(exported, tmp_path) -> None:
    _, onnx_path = exported("resnet", "legacy")
    model = export(onnx_path, tmp_path / "b2.xml", layer="layer4", static_batch=2, fp16=False, info=INFO).files[0]
    files = sorted(PHOTOS.glob("*.jpg"))[:3]  # 3 images through a batch-2 model
    fixed = Explainer.load(model).explain(files)
    assert len(fixed) == 3
    ours = Explainer.load(model).explain(files[2])[0]
    np.testing.assert_allclose(fixed[2].maps, ours.maps, atol=1e-5)
    assert len(list(Explainer.load(model).explain_many(files, jobs=2))) == 3


# -- stopping a stream early never aborts the process ----------------------------------------------------

_STOPPING = """
import sys
from pathlib import Path
from ovxai.errors import OvxaiError
from ovxai.runtime import Explainer, backends
photos = sorted(Path(sys.argv[3]).glob("*.jpg"))
explainer = Explainer.load(sys.argv[1], backend=sys.argv[2])
try:  # a bad image in the middle, no on_error: raised while requests are in flight
    for _ in explainer.explain_many(photos * 3 + [Path("missing.jpg")] + photos * 3, jobs=4):
        pass
except OvxaiError:
    assert not backends._BUSY_QUEUES, "the stream's requests were not waited for"
for i, _ in enumerate(explainer.explain_many(photos * 3, jobs=4)):  # the caller stops reading
    if i == 1:
        break
stream = explainer.explain_many(photos * 6, jobs=4)
try:  # the caller's own loop fails and keeps the stream: requests complete while the process exits
    for i, _ in enumerate(stream):
        if i == 1:
            raise KeyError("caller failed")
except KeyError:
    pass
print("ok", flush=True)
"""


@pytest.mark.parametrize(("kind", "backend"), [("xml", "openvino"), ("onnx", "onnxruntime")])
def test_stopping_a_stream_early_never_aborts(patched, kind, backend) -> None:
    """Before: SIGABRT ('terminate called without an active exception', 'FATAL: exception not rethrown')
    in most runs on OpenVINO. Three processes: each run had about a 3 in 4 chance to abort."""
    for _ in range(3 if backend == "openvino" else 1):
        proc = subprocess.run(
            [sys.executable, "-c", _STOPPING, str(patched[kind]), backend, str(PHOTOS)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_closing_a_stream_waits_for_its_requests(patched) -> None:
    explainer = Explainer.load(patched["xml"])
    stream = explainer.explain_many(sorted(PHOTOS.glob("*.jpg")) * 4, jobs=4)
    next(stream)
    assert backends._BUSY_QUEUES  # requests in flight
    stream.close()
    assert not backends._BUSY_QUEUES


# -- preprocessing --------------------------------------------------------------------------------------


def test_preprocessing_is_never_silently_defaulted(patched) -> None:
    with pytest.raises(OvxaiError, match=r"records no preprocessing .*pass mean= and scale=.*mean=0 scale=1"):
        Explainer.load(patched["bare"])
    raw = Explainer.load(patched["bare"], mean=0, scale=1)
    assert raw.preprocessing == Preprocessing((SIZE, SIZE), (0.0,), (1.0,), "rgb")
    assert raw.preprocessing_source == {
        "size": "model input shape",
        "mean": "arguments",
        "scale": "arguments",
        "channel_order": "default, none recorded",
    }
    assert "mean, scale: arguments" in raw.describe_preprocessing()
    scaled = Explainer.load(patched["bare"], scale=[58.0, 57.0, 57.0])  # one given: the other is neutral
    assert scaled.preprocessing.mean == (0.0, 0.0, 0.0) and "neutral" in scaled.preprocessing_source["mean"]
    recorded = Explainer.load(patched["xml"])
    assert "mean, scale, channel order: model metadata" in recorded.describe_preprocessing()
    bgr = Explainer.load(patched["xml"], mean=[1, 2, 3], channel_order="bgr")
    assert bgr.preprocessing.mean == (1.0, 2.0, 3.0) and bgr.preprocessing.channel_order == "bgr"
    assert bgr.preprocessing.scale == (60.0, 60.0, 60.0)  # still the model's
    for bad, message in (
        ({"scale": 0}, "divides by zero"),
        ({"scale": [1, 0, 1]}, "divides by zero"),
        ({"mean": math.nan}, "not finite"),
        ({"scale": math.inf}, "not finite"),
        ({"mean": [1, 2]}, "takes 1 or 3 values"),
        ({"mean": [1, 2, 3, 4]}, "takes 1 or 3 values"),
        ({"channel_order": "rbg"}, "unknown channel_order"),
    ):
        with pytest.raises(OvxaiError, match=message):
            Explainer.load(patched["xml"], **bad)


def test_labels_must_match_the_classes(patched, tmp_path) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(OvxaiError, match="3 labels but the model predicts 10 classes"):
        Explainer.load(patched["xml"], labels=tmp_path / "labels.txt")


# -- images ---------------------------------------------------------------------------------------------


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


def test_bytes_like_inputs(patched) -> None:
    data = (PHOTOS / "coffee.jpg").read_bytes()
    explainer = Explainer.load(patched["xml"])
    want = explainer.explain(data)[0]
    for same in (bytearray(data), memoryview(data)):
        (got,) = explainer.explain(same)  # one image, not a sequence of byte values
        assert got.source == "<bytes>" and got.top == want.top
        np.testing.assert_array_equal(got.maps, want.maps)


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
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((4, 0, 3), np.float32), np.zeros((0, 5), np.uint8)):
        with pytest.raises(ImageError, match="has no pixels"):
            load_rgb(empty)
    with pytest.raises(ImageError, match="has no pixels"):
        load_rgb(Image.new("RGB", (0, 7)))
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_rgb(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="empty"):
        load_rgb(b"")
    with pytest.raises(ImageError, match="type int is not an image"):
        load_rgb(5)  # type: ignore[arg-type]
    with pytest.raises(ImageError) as garbage:
        load_rgb(b"GIF89a not really")
    assert " at 0x" not in str(garbage.value)  # Pillow names the BytesIO's repr: never shown


def test_pixel_limit_is_the_documented_one(tmp_path) -> None:
    """100 megapixels is the limit, not Pillow's 89.5 MP, and Pillow's global setting stays as it is."""
    Image.new("1", (10000, 9500)).save(tmp_path / "95mp.png")
    Image.new("1", (10001, 10000)).save(tmp_path / "100mp.png")
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not even be raised
        assert load_rgb(tmp_path / "95mp.png")[1].size == (10000, 9500)
    with pytest.raises(ImageError, match="10001 x 10000 pixels, over the limit of 100,000,000"):
        load_rgb(tmp_path / "100mp.png")
    assert before == Image.MAX_IMAGE_PIXELS
    with pytest.warns(Image.DecompressionBombWarning):  # the filter was scoped to our call
        Image.open(tmp_path / "95mp.png").close()


def test_output_names_are_unique(tmp_path) -> None:
    for rel in ("a/cat.jpg", "b/cat.jpg", "cat.jpg", "cat.png", "a b/Cat.jpg", "a_b/cat.jpg", "x/.hidden.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = named_image_files([tmp_path, tmp_path / "cat.jpg"])  # the same file twice: once
    assert len(names) == 7
    assert len({n.casefold() for n in names.values()}) == 7  # unique on case-insensitive file systems too
    assert names[tmp_path / "a/cat.jpg"] == "a__cat" and names[tmp_path / "b/cat.jpg"] == "b__cat"
    assert {names[tmp_path / "cat.jpg"], names[tmp_path / "cat.png"]} == {"cat_jpg", "cat_png"}
    assert all("/" not in n and not n.startswith(".") for n in names.values())


# -- pictures -------------------------------------------------------------------------------------------


def test_colormaps_are_the_published_tables() -> None:
    for lut in COLORMAPS.values():
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    np.testing.assert_array_equal(COLORMAPS["gray"][:, 0], np.arange(256))
    matplotlib = pytest.importorskip("matplotlib")
    x = np.linspace(0, 1, 256)
    # matplotlib holds Google's turbo table and jet's piecewise-linear definition (in floats: jet's
    # exact .5 ties come out a hair either side, so ours must be a correct rounding, not bit-equal).
    turbo, jet = (np.asarray(matplotlib.colormaps[name](x))[:, :3] * 255 for name in ("turbo", "jet"))
    np.testing.assert_array_equal(COLORMAPS["turbo"], np.uint8(turbo + 0.5))
    assert np.abs(COLORMAPS["jet"] - jet).max() <= 0.5 + 1e-9


def test_overlay_resizes_only_the_map_it_draws(patched) -> None:
    result = Explainer.load(patched["xml"]).explain(PHOTOS / "coffee.jpg", targets="top10")[0]
    drawn = result.overlay(3, alpha=0.3, colormap="jet")
    assert "upsampled" not in result.__dict__  # the 9 other maps were not resized
    np.testing.assert_allclose(result.upsample(3), result.upsampled[3], atol=1e-6)
    assert np.array_equal(np.asarray(drawn), np.asarray(result.overlay(3, alpha=0.3, colormap="jet")))
    for bad, message in (
        ({"alpha": 1.5}, "not an opacity"),
        ({"alpha": math.nan}, "not an opacity"),
        ({"colormap": "viridis"}, "unknown colormap"),
        ({"index": 10}, "not one of the 10"),
    ):
        with pytest.raises(OvxaiError, match=message):
            result.overlay(**bad)


def test_upsampling_matches_pillow_bilinear() -> None:
    saliency = np.random.default_rng(0).random((2, 7, 5), dtype=np.float32)
    for height, width in ((300, 451), (224, 224), (7, 5), (9, 700)):
        want = [np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.BILINEAR)) for m in saliency]
        got = upsample(saliency, height, width)
        assert got.dtype == np.float32 and got.shape == (2, height, width)
        np.testing.assert_allclose(got, np.stack(want), atol=1e-6)


# -- errors at load -------------------------------------------------------------------------------------


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


def test_runtime_imports_no_framework(patched) -> None:
    code = (
        "import sys; from ovxai.runtime import Explainer; "
        f"r = Explainer.load({str(patched['xml'])!r}).explain({str(PHOTOS / 'coffee.jpg')!r})[0]; r.overlay(); "
        "print(' '.join(m for m in ('torch', 'onnx', 'cv2', 'matplotlib') if m in sys.modules) or 'clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "clean"


# -- the command line -----------------------------------------------------------------------------------


def test_cli_explain(patched, tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg"))[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(["explain", "-m", str(patched["xml"]), "-i", str(folder), "-o", str(out), "--explain", "top2"])
    assert code == 1  # finished, but one image was skipped
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and "broken.jpg" in captured.err
    assert "preprocessing: resize to 128 x 128, mean 120 110 100, scale 60 60 60, RGB" in captured.out
    report = json.loads((out / "summary.json").read_text())
    assert len(report["images"]) == 2 and len(report["skipped"]) == 1
    assert all(len(entry["overlays"]) == 2 and Path(entry["overlays"][0]).is_file() for entry in report["images"])
    assert (out / "contact_sheet.png").is_file()
    assert main(["explain", "-m", str(patched["xml"]), "-i", str(folder / "broken.jpg"), "-o", str(out)]) == 2
    assert "is not a usable image" in capsys.readouterr().err


def test_cli_explain_class_ids(patched, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["explain", "-m", str(patched["xml"]), "-i", str(PHOTOS / "coffee.jpg"), "-o", str(out),
                 "--explain", "7"]) == 0  # fmt: skip
    (entry,) = json.loads((out / "summary.json").read_text())["images"]
    assert [t["class_id"] for t in entry["targets"]] == [7] and entry["overlays"] == [str(out / "coffee_7.jpg")]


def test_cli_explain_needs_preprocessing(patched, tmp_path, capsys) -> None:
    photo, out = str(PHOTOS / "coffee.jpg"), tmp_path / "out"
    err = _fails(capsys, "-m", str(patched["bare"]), "-i", photo, "-o", str(out))
    assert "records no preprocessing" in err and "pass --mean and --scale" in err and "--mean 0 --scale 1" in err
    assert not out.exists()
    assert "--scale 0.0 0.0 0.0 divides by zero" in _fails(capsys, "-m", str(patched["bare"]), "-i", photo,
                                                           "-o", str(out), "--mean", "0", "--scale", "0")  # fmt: skip
    assert "--mean nan is not finite" in _fails(
        capsys, "-m", str(patched["bare"]), "-i", photo, "-o", str(out), "--mean", "nan", "--scale", "1"
    )
    assert "--mean takes 1 or 3 values" in _fails(
        capsys, "-m", str(patched["bare"]), "-i", photo, "-o", str(out), "--mean", "1,2", "--scale", "1"
    )
    raw = ["-m", str(patched["bare"]), "-i", photo, "-o", str(out), "--mean", "0", "--scale", "1"]
    assert main(["explain", *raw]) == 0
    said = capsys.readouterr().out
    assert "preprocessing: resize to 128 x 128, mean 0 0 0, scale 1 1 1, RGB" in said and "arguments" in said


def test_cli_explain_bad_arguments_write_nothing(patched, tmp_path, capsys) -> None:
    model, photo, out = str(patched["xml"]), str(PHOTOS / "coffee.jpg"), tmp_path / "out"
    for args, message in (
        (["--top-k", "0"], "--top-k 0 reports no prediction"),
        (["--top-k", "-3"], "--top-k -3 reports no prediction"),
        (["--jobs", "0"], "--jobs 0 runs no request"),
        (["--alpha", "1.5"], "--alpha 1.5 is not an opacity"),
        (["--alpha", "nan"], "--alpha nan is not an opacity"),
        (["--explain", "top0"], "--explain 'top0' asks for no class"),
        (["--explain", "top11"], "asks for 11 classes but the model has 10"),
        (["--explain", "1,2000"], "class id 2000 is out of range"),
        (["--explain", "5000"], "class id 5000 is out of range"),
        (["--explain", "all"], "neither topK nor class ids"),
    ):
        assert message in _fails(capsys, "-m", model, "-i", photo, "-o", str(out), *args), args
        assert not out.exists(), args  # no overlay without summary.json: nothing at all


def test_cli_explain_output_folder_errors(patched, tmp_path, capsys, monkeypatch) -> None:
    model, photo = str(patched["xml"]), str(PHOTOS / "coffee.jpg")
    (tmp_path / "file").write_text("")
    assert "is a file" in _fails(capsys, "-m", model, "-i", photo, "-o", str(tmp_path / "file"))
    assert "lies under the file" in _fails(capsys, "-m", model, "-i", photo, "-o", str(tmp_path / "file/sub"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real_access = os.access  # root may write anywhere: answer for this folder as for anyone else
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    try:
        assert "is read-only" in _fails(capsys, "-m", model, "-i", photo, "-o", str(locked / "out"))
    finally:
        locked.chmod(0o755)


def test_cli_explain_same_names_in_subfolders(patched, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
    (folder / "a/cat.jpg").write_bytes((PHOTOS / "chelsea_cat.jpg").read_bytes())
    (folder / "b/cat.jpg").write_bytes((PHOTOS / "coffee.jpg").read_bytes())
    out = tmp_path / "out"
    assert main(["explain", "-m", str(patched["xml"]), "-i", str(folder), "-o", str(out), "--explain", "3"]) == 0
    overlays = [entry["overlays"][0] for entry in json.loads((out / "summary.json").read_text())["images"]]
    assert overlays == [str(out / "a__cat_3.jpg"), str(out / "b__cat_3.jpg")]
    sizes = {Image.open(p).size for p in overlays}
    assert sizes == {Image.open(PHOTOS / "chelsea_cat.jpg").size, Image.open(PHOTOS / "coffee.jpg").size}


def test_cli_explain_does_not_abort(patched, tmp_path) -> None:
    """The issue's command: '--explain 0' was 'top 0', raised while requests were in flight and died
    with SIGABRT in about two runs of three. Now '0' is class id 0; top0 is refused before inference."""
    base = [sys.executable, "-m", "ovxai.cli", "explain", "-m", str(patched["xml"]), "-i", str(PHOTOS)]
    started = time.perf_counter()
    for explain, code in (("top0", 2), ("1,2000", 2), ("0", 0)):
        proc = subprocess.run([*base, "-o", str(tmp_path / explain), "--explain", explain],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert proc.returncode == code, (explain, proc.returncode, proc.stderr[-1000:])
    assert time.perf_counter() - started < 60


def test_cli_explain_symlink_loops_are_one_line(patched, tmp_path, capsys) -> None:
    """A loop of symbolic links given as an image, named in a list file, or as the list file itself."""
    loop, listed, looped_list = tmp_path / "loop.jpg", tmp_path / "list.txt", tmp_path / "l1.txt"
    loop.symlink_to(loop.name)
    (tmp_path / "l2.txt").symlink_to(looped_list.name)
    looped_list.symlink_to("l2.txt")
    listed.write_text(f"{PHOTOS / 'coffee.jpg'}\nloop.jpg\n")
    base = ["-m", str(patched["xml"]), "-o", str(tmp_path / "out")]
    assert f"image '{loop}' is a loop of symbolic links" in _fails(capsys, *base, "-i", str(loop))
    assert f"list file '{looped_list}' is a loop of symbolic links" in _fails(capsys, *base, "-i", str(looped_list))
    assert main(["explain", *base, "-i", str(listed)]) == 1
    captured = capsys.readouterr()
    assert f"warning: skipped image '{loop}' is a loop of symbolic links" in captured.err
    assert "explained 1 image(s), skipped 1" in captured.out


def test_cli_explain_writes_what_the_runtime_draws(patched, tmp_path, capsys) -> None:
    """Overlays drawn and written on threads while the engine runs: each file holds the encoding of that
    image's overlay, in every format, and summary.json lists the images in input order."""
    folder = tmp_path / "in"
    folder.mkdir()
    photos = sorted(PHOTOS.glob("*.jpg"))
    for i in range(12):
        (folder / f"p{i:02}.jpg").write_bytes(photos[i % len(photos)].read_bytes())
    explainer = Explainer.load(patched["xml"])
    for form, extra in (("jpeg", []), ("png", ["--alpha", "1"]), ("webp", ["--overlay-format", "webp"])):
        out = tmp_path / form
        argv = ["explain", "-m", str(patched["xml"]), "-i", str(folder), "-o", str(out), "--explain", "top2", *extra]
        assert main(argv) == 0
        report = json.loads((out / "summary.json").read_text())
        assert report["overlay_format"] == form
        assert [Path(entry["image"]).name for entry in report["images"]] == [f"p{i:02}.jpg" for i in range(12)]
        alpha = 1.0 if form == "png" else 0.5
        for entry in report["images"][::5]:
            result = explainer.explain(entry["image"], "top2")[0]
            for i, path in enumerate(entry["overlays"]):
                assert path.endswith(pictures.SUFFIXES[form])
                assert Path(path).read_bytes() == pictures.encode(result.overlay(i, alpha), form), path
        assert Image.open(out / "contact_sheet.png").size == (4 * 256, 6 * (256 + 18))  # 24 tiles, 4 a row
    capsys.readouterr()


def test_throughput_asks_openvino_for_streams_and_keeps_f32(patched) -> None:
    """throughput=True (ovxai explain over a folder) adds the THROUGHPUT hint; f32 stays, given or not."""
    for config in (None, {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1"}):
        compiled = Explainer.load(patched["xml"], config=config, throughput=True).session.compiled  # type: ignore[attr-defined]
        assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
        assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    latency = Explainer.load(patched["xml"]).session.compiled  # type: ignore[attr-defined]
    assert str(latency.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
