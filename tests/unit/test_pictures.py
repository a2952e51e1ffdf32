"""Encoding saliency pictures (``ovxai.runtime.pictures.encode``): PNG lossless for every layout it takes,
JPEG and WebP decodable at the same size, formats by name and by file extension, atomic saves, and the
same bytes from many threads at once; and ``map_ahead``, the ordered thread pipeline behind
``ovxai explain``."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovxai.errors import OvxaiError
from ovxai.runtime import pictures
from ovxai.runtime.ahead import map_ahead

PHOTO = Path(__file__).resolve().parents[2] / "samples/photos/chelsea_cat.jpg"


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def overlay_of_photo() -> Image.Image:
    photo = Image.open(PHOTO).convert("RGB")
    saliency = np.random.default_rng(0).random((1, 7, 7), dtype=np.float32)
    return pictures.overlay(photo, pictures.upsample(saliency, photo.height, photo.width)[0])


@pytest.fixture(params=["isal", "zlib"])
def deflate(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """PNG's deflate by ISA-L (where installed) and by zlib."""
    if request.param == "isal":
        pytest.importorskip("isal")
    else:
        monkeypatch.setattr(pictures, "_isal_zlib", None)
    return str(request.param)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 2), (5, 7, 3), (5, 7, 4), (1, 1, 3), (300, 451, 3)])
def test_png_is_lossless_for_every_layout(shape: tuple[int, ...], deflate: str) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = pictures.encode(pixels, "png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(decoded(data).reshape(shape), pixels)


def test_png_of_an_overlay_is_lossless_and_no_larger_than_pillows_fastest(deflate: str) -> None:
    picture = overlay_of_photo()
    data = pictures.encode(picture, "PNG")
    assert np.array_equal(decoded(data), np.asarray(picture))
    pillow = io.BytesIO()
    picture.save(pillow, format="PNG", compress_level=1)
    assert len(data) <= 1.1 * len(pillow.getvalue())  # the speed is not paid for in size


def test_lossy_formats_keep_the_picture() -> None:
    picture = overlay_of_photo()
    want = np.asarray(picture).astype(np.float64)
    for form, spelled in (("jpeg", "jpg"), ("jpeg", "JPEG"), ("webp", "webp")):
        data = pictures.encode(picture, spelled)
        got = decoded(data)
        assert Image.open(io.BytesIO(data)).format == form.upper() and got.shape == want.shape
        assert np.abs(got - want).mean() < 3.0, form  # quality 90: a few levels on average
    rgba = picture.convert("RGBA")
    assert decoded(pictures.encode(rgba, "jpeg")).shape == want.shape  # JPEG has no alpha: dropped


def test_formats_by_name_and_by_extension(tmp_path: Path) -> None:
    assert [pictures.format_of(f"a{s}") for s in (".png", ".JPG", ".jpeg", ".webp")] == ["png", "jpeg", "jpeg", "webp"]
    assert pictures.overlay_format(0.5) == "jpeg" and pictures.overlay_format(1.0) == "png"
    with pytest.raises(OvxaiError, match=r"'a\.gif' does not name a picture format.*\.png, \.jpg or \.webp"):
        pictures.format_of("a.gif")
    with pytest.raises(OvxaiError, match="unknown picture format= 'bmp'; use one of: png, jpeg, webp"):
        pictures.encode(overlay_of_photo(), "bmp")
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(OvxaiError, match="is not a picture"):
            pictures.encode(bad, "png")


def test_save_writes_whole_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    picture = overlay_of_photo()
    path = pictures.save(picture, tmp_path / "a.jpg")
    assert path.read_bytes() == pictures.encode(picture, "jpeg")
    assert pictures.save(picture, tmp_path / "b.out", "png").read_bytes()[:4] == b"\x89PNG"
    before = path.read_bytes()

    def fail(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="No space"):
        pictures.save(np.zeros((8, 8, 3), np.uint8), path)
    assert path.read_bytes() == before  # the old file stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.out"]  # no scratch file left


def test_encoding_from_many_threads_gives_the_same_bytes() -> None:
    picture = overlay_of_photo()
    for form in pictures.FORMATS:
        alone = pictures.encode(picture, form)
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(lambda _: pictures.encode(picture, form), range(12))) == {alone}  # noqa: B023


def test_map_ahead_keeps_the_order_and_runs_ahead() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def slow_for_even(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.02 if i % 2 == 0 else 0.0)
        return i * i

    got = [(i, future.result()) for i, future in map_ahead(slow_for_even, range(20), workers=3, ahead=4)]
    assert got == [(i, i * i) for i in range(20)]
    assert sorted(started) == list(range(20))


def test_map_ahead_reads_no_further_than_asked_and_stops_cleanly() -> None:
    read: list[int] = []

    def items() -> object:
        for i in range(1000):
            read.append(i)
            yield i

    running = threading.Event()

    def work(i: int) -> int:
        running.set()
        return i

    with closing(map_ahead(work, items(), workers=2, ahead=3)) as stream:  # type: ignore[arg-type]
        first, future = next(stream)
        assert first == 0 and future.result() == 0
    assert len(read) <= 5  # the items taken, plus `ahead`, plus the one that made the window full
    assert running.is_set()


def test_map_ahead_passes_errors_to_the_consumer_in_order() -> None:
    def fails_on_3(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    results = []
    for _, future in map_ahead(fails_on_3, range(6), workers=2, ahead=2):
        try:
            results.append(future.result())
        except ValueError as exc:
            results.append(str(exc))
    assert results == [0, 1, 2, "three", 4, 5]
