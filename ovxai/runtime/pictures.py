"""Saliency pictures: colour maps (exact 256-entry look-up tables), overlays on the photo, contact sheets,
and their encoding into files (PNG, JPEG, WebP) at the speed of the model rather than of zlib."""

from __future__ import annotations

import io
import itertools
import math
import os
import struct
import zlib
from fractions import Fraction
from numbers import Real
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovxai.errors import OvxaiError

# Turbo (Copyright 2019 Google LLC, Apache-2.0; Anton Mikhailov): its published definition, the
# 256-entry sRGB table, as bytes (R, G, B per entry). The polynomial fit it replaces was off by up to
# 32 levels.
_TURBO_HEX = (
    "30123b32154333184a341b51351e5836215f37246638276d392a733a2d793b2f803c32863d358b3e38913f3b973f3e9c"
    "4040a24143a74146ac4249b1424bb5434eba4451bf4454c34456c74559cb455ccf455ed34661d64664da4666dd4669e0"
    "466be3476ee64771e94773eb4776ee4778f0477bf2467df44680f64682f84685fa4687fb458afc458cfd448ffe4391fe"
    "4294ff4196ff4099ff3e9bfe3d9efe3ba0fd3aa3fc38a5fb37a8fa35abf833adf731aff52fb2f42eb4f22cb7f02ab9ee"
    "28bceb27bee925c0e723c3e422c5e220c7df1fc9dd1ecbda1ccdd81bd0d51ad2d21ad4d019d5cd18d7ca18d9c818dbc5"
    "18ddc218dec018e0bd19e2bb19e3b91ae4b61ce6b41de7b21fe9af20eaac22ebaa25eca727eea42aefa12cf09e2ff19b"
    "32f29835f39438f4913cf58e3ff68a43f78746f8844af8804ef97d52fa7a55fa7659fb735dfc6f61fc6c65fd6969fd66"
    "6dfe6271fe5f75fe5c79fe597dff5680ff5384ff5188ff4e8bff4b8fff4992ff4796fe4499fe429cfe409ffd3fa1fd3d"
    "a4fc3ca7fc3aa9fb39acfb38affa37b1f936b4f836b7f735b9f635bcf534bef434c1f334c3f134c6f034c8ef34cbed34"
    "cdec34d0ea34d2e935d4e735d7e535d9e436dbe236dde037dfdf37e1dd37e3db38e5d938e7d739e9d539ebd339ecd13a"
    "eecf3aefcd3af1cb3af2c93af4c73af5c53af6c33af7c13af8be39f9bc39faba39fbb838fbb637fcb336fcb136fdae35"
    "fdac34fea933fea732fea431fea130fe9e2ffe9b2dfe992cfe962bfe932afe9029fd8d27fd8a26fc8725fc8423fb8122"
    "fb7e21fa7b1ff9781ef9751df8721cf76f1af66c19f56918f46617f36315f26014f15d13f05b12ef5811ed5510ec530f"
    "eb500eea4e0de84b0ce7490ce5470be4450ae2430ae14109df3f08dd3d08dc3b07da3907d83706d63506d43305d23105"
    "d02f05ce2d04cc2b04ca2a04c82803c52603c32503c12302be2102bc2002b91e02b71d02b41b01b21a01af1801ac1701"
    "a91601a71401a41301a112019e10019b0f01980e01950d01920b018e0a018b09028808028507028106027e05027a0403"
)

# Jet as matplotlib (and MATLAB, up to its breakpoints) defines it: piecewise linear per channel
# through these (position, value) knots, evaluated at the 256 table positions in exact rational
# arithmetic and rounded half up (floats put several entries a hair below their .5 ties).
_JET_KNOTS = {
    "red": (("0", "0"), ("0.35", "0"), ("0.66", "1"), ("0.89", "1"), ("1", "0.5")),
    "green": (("0", "0"), ("0.125", "0"), ("0.375", "1"), ("0.64", "1"), ("0.91", "0"), ("1", "0")),
    "blue": (("0", "0.5"), ("0.11", "1"), ("0.34", "1"), ("0.65", "0"), ("1", "0")),
}


def _piecewise(knots: tuple[tuple[str, str], ...], x: Fraction) -> Fraction:
    points = [(Fraction(a), Fraction(b)) for a, b in knots]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8: entry i is the colour of the value i / 255."""
    if name == "turbo":
        return np.array(bytearray.fromhex("".join(_TURBO_HEX)), np.uint8).reshape(256, 3)
    if name == "jet":
        rows = [[math.floor(_piecewise(_JET_KNOTS[c], Fraction(i, 255)) * 255 + Fraction(1, 2)) for c in _JET_KNOTS]
                for i in range(256)]  # fmt: skip
        return np.array(rows, np.uint8)
    return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # gray


COLORMAPS = {name: _lut(name) for name in ("turbo", "jet", "gray")}


def check_overlay(alpha: float, colormap: str) -> None:
    """OvxaiError unless ``alpha`` is in [0, 1] and ``colormap`` is known (checked before any work)."""
    if colormap not in COLORMAPS:
        raise OvxaiError(f"unknown colormap= {colormap!r}", f"use one of: {', '.join(COLORMAPS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0.0 <= alpha <= 1.0:
        raise OvxaiError(f"alpha= {alpha!r} is not an opacity", "use a number from 0 (photo only) to 1 (map only)")


def overlay(photo: Image.Image, saliency: np.ndarray, alpha: float = 0.5, colormap: str = "turbo") -> Image.Image:
    """The photo with the map (already at the photo's size, values in [0, 1]) blended on top."""
    check_overlay(alpha, colormap)
    index = np.uint8(np.clip(np.nan_to_num(saliency), 0.0, 1.0) * 255 + 0.5)
    heat = Image.fromarray(index, mode="L").convert("P")  # the LUT as a palette: PIL maps it in C
    heat.putpalette(COLORMAPS[colormap].tobytes())
    return Image.blend(photo.convert("RGB"), heat.convert("RGB"), float(alpha))


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w) -> (T, height, width) float32, bilinear with pixel centres aligned and edges clamped:
    Pillow's bilinear resize of a float image, value for value (tested), done as two gathers and blends
    in numpy (no BLAS, whose threads would fight the inference engine's for the cores). Kept over
    Pillow because, timed beside running OpenVINO and ONNX Runtime streams, it was 1.3-2.7x faster on
    one map (what an overlay resizes); Pillow won only on several maps at once below ~2 MP."""
    maps = maps.astype(np.float32, copy=False)
    low, high, frac = _bilinear_taps(maps.shape[1], height)
    rows = maps[:, low, :] * (1 - frac)[:, None] + maps[:, high, :] * frac[:, None]
    low, high, frac = _bilinear_taps(maps.shape[2], width)
    result: np.ndarray = rows[:, :, low] * (1 - frac) + rows[:, :, high] * frac
    return result


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(src).astype(np.intp)
    return low, np.minimum(low + 1, size_in - 1), (src - low).astype(np.float32)


TILE = 256  # a contact sheet's tiles are this many pixels square


def thumbnail(picture: Image.Image, size: int = TILE) -> Image.Image:
    """``picture`` fitted into ``size`` x ``size`` (in place, and returned): first shrunk by a whole factor
    (a box filter, Pillow's ``reduce``), then resized bilinearly by less than 2x. A tenth of what Pillow's
    default (bicubic over a 2x reducing gap) costs at 512 px, which was as much as drawing the overlay."""
    picture.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=1.0)
    return picture


def contact_sheet(tiles: list[tuple[Image.Image, str]], columns: int = 4, tile: int = TILE) -> Image.Image:
    """A grid of (picture, caption) tiles, each fitted into tile x tile with its caption below."""
    font = ImageFont.load_default()
    caption_height = 18
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (picture, caption) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption_height)
        thumb = thumbnail(picture.copy(), tile)
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        text = caption if draw.textlength(caption, font=font) <= tile - 4 else caption[: tile // 7] + "..."
        draw.text((x + 2, y + tile + 2), text, fill="black", font=font)
    return sheet


# -- encoding ---------------------------------------------------------------------------------------

try:  # Intel's ISA-L: the same zlib stream, 4-5x faster (optional: `pip install isal`, in the serve extra)
    from isal import isal_zlib as _isal_zlib
except ImportError:
    _isal_zlib = None

FORMATS = ("png", "jpeg", "webp")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}  # what an output file of each format is named
_SPELLINGS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
QUALITY = 90  # JPEG and WebP: the heat map's smooth colours and the photo under it show no artefacts at 90
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey+alpha, RGB, RGBA


def check_format(format: str) -> str:
    """The canonical name ('png', 'jpeg', 'webp') of a format spelled in any case, 'jpg' included."""
    name = _SPELLINGS.get(format.lower()) if isinstance(format, str) else None
    if name is None:
        raise OvxaiError(f"unknown picture format= {format!r}", f"use one of: {', '.join(FORMATS)}")
    return name


def format_of(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for by its extension (.png, .jpg/.jpeg, .webp)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise OvxaiError(f"'{path}' does not name a picture format by its extension", "end it in .png, .jpg or .webp")
    return _BY_SUFFIX[suffix]


def overlay_format(alpha: float) -> str:
    """The format that suits an overlay drawn with ``alpha``: JPEG while the photo shows through (a photo
    is what JPEG is for: 1-2 ms for 512 px against 20-30 ms for Pillow's PNG at its fastest level), PNG for
    the colour map alone (alpha 1: flat colours, where JPEG's blocks would show)."""
    return "jpeg" if alpha < 1 else "png"


def encode(image: Image.Image | np.ndarray, format: str = "png") -> bytes:
    """``image`` (a PIL image, or an (H, W), (H, W, 1|3|4) uint8 array) as the bytes of a ``format`` file:
    'png' (lossless, see :func:`encode_png`), 'jpeg' or 'webp' (quality :data:`QUALITY`; WebP at its
    fastest method). Safe to call from several threads at once: zlib, libjpeg and libwebp run without
    the GIL, so a thread pool encodes on every core while the engine runs."""
    name = check_format(format)
    if name == "png":
        return encode_png(np.asarray(image) if isinstance(image, Image.Image) else image)
    picture = image if isinstance(image, Image.Image) else Image.fromarray(_pixels(image))
    if picture.mode not in ("RGB", "L") and not (name == "webp" and picture.mode == "RGBA"):
        picture = picture.convert("RGB")  # JPEG has no alpha channel
    buffer = io.BytesIO()
    if name == "jpeg":
        picture.save(buffer, format="JPEG", quality=QUALITY)
    else:
        picture.save(buffer, format="WEBP", quality=QUALITY, method=0)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG file of ``pixels`` ((H, W) or (H, W, C) uint8, C = 1, 2, 3 or 4), lossless: every row
    "Sub"-filtered (each byte minus the same channel of the pixel to its left, mod 256: one numpy
    subtraction for the whole image), then deflated by ISA-L at its level 1 where ``isal`` is installed
    (the ``serve`` extra), else by zlib Huffman-only (level 1, ``Z_HUFFMAN_ONLY``).

    Why not Pillow's encoder: it chooses a filter per row by trying all five (a pass over the row each) and
    then searches for matches: 47-59 ms for a 512 x 512 overlay at ``compress_level=1`` on a busy 2-core
    machine, 2.5x zlib's Huffman-only pass here at the same size (the Sub-filtered differences of a photo
    are small numbers: entropy coding alone gets what string matching would), and ISA-L's SIMD deflate is
    4-5x faster again, with its matches (~2.4 ms there). Both release the GIL while they deflate."""
    pixels = _pixels(pixels)
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 1  # filter type Sub
    filtered[:, 1 : channels + 1] = rows[:, :channels]  # the first pixel has no left neighbour: itself
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, channels + 1 :])  # wraps mod 256
    data = _deflate(filtered.data)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _deflate(data: memoryview) -> bytes:
    """A zlib stream of ``data``, as fast as what is installed makes it."""
    if _isal_zlib is not None:
        compressed: bytes = _isal_zlib.compress(data, 1)
        return compressed
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return deflate.compress(data) + deflate.flush()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _pixels(image: np.ndarray) -> np.ndarray:
    """(H, W, C) C-contiguous uint8, or OvxaiError: what the encoders take."""
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in _PNG_COLOUR_TYPES or not pixels.size:
        raise OvxaiError(
            f"an array of dtype {pixels.dtype} and shape {pixels.shape} is not a picture",
            "pass (H, W), (H, W, 3) or (H, W, 4) uint8 pixels, or a PIL image",
        )
    return np.ascontiguousarray(pixels)


def save(image: Image.Image | np.ndarray, path: str | os.PathLike[str], format: str | None = None) -> Path:
    """Write ``image`` to ``path`` as ``format`` (default: the one its extension names) with :func:`encode`;
    the file appears whole or not at all (written beside it, then renamed over it)."""
    path = Path(path)
    write_atomically(path, encode(image, check_format(format) if format else format_of(path)))
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by way of a scratch file in the same folder and a rename: a reader (a server
    that watches the folder, a rerun after a kill) sees the old file or the new one, never a part."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        scratch.write_bytes(data)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
