"""Turning whatever the user has (paths, bytes, PIL images, arrays) into the network's input tensor."""

from __future__ import annotations

import errno
import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovxai.conventions import CHANNEL_ORDERS, ChannelOrder
from ovxai.errors import OvxaiError

ImageInput = Union[str, os.PathLike[str], bytes, bytearray, memoryview, Image.Image, np.ndarray]  # noqa: UP007 - runtime alias
ONE_IMAGE = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)
"""The types that are one image (a memoryview or an array is iterable, but never a list of images)."""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 100_000_000  # a 10000 x 10000 photo; larger ones are refused as decompression bombs


class ImageError(OvxaiError):
    """An image that cannot be used; in a batch it is skipped, alone it is an error."""


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the network's input: resize to ``size``, then (pixel - mean) / scale per channel,
    in the channel order the network was trained on. Values are checked: a zero or non-finite scale or a
    non-finite mean would feed the network garbage without any error."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]  # per channel (1 value: all three), subtracted from 0..255 pixels
    scale: tuple[float, ...]  # per channel (1 value: all three), divides after the mean
    channel_order: ChannelOrder = "rgb"

    def __post_init__(self) -> None:
        size = tuple(self.size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
            raise OvxaiError(f"size= {self.size!r} is not a (height, width) in pixels", "e.g. size=(224, 224)")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        for name in ("mean", "scale"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) not in (1, 3):
                raise OvxaiError(f"{name}= takes 1 or 3 values, got {len(values)}", "one per channel, or one for all")
            if not all(math.isfinite(v) for v in values):
                raise OvxaiError(f"{name}= {_join(values)} is not finite", f"give real numbers as {name}=")
            object.__setattr__(self, name, values * 3 if len(values) == 1 else values)
        if 0.0 in self.scale:
            raise OvxaiError(f"scale= {_join(self.scale)} divides by zero", "use e.g. scale=58.395,57.12,57.375")
        if self.channel_order not in CHANNEL_ORDERS:
            raise OvxaiError(
                f"unknown channel_order= {self.channel_order!r}", f"use one of: {', '.join(CHANNEL_ORDERS)}"
            )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(3, H, W) float32 from an RGB image."""
        resized = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32)
        if self.channel_order == "bgr":
            pixels = pixels[..., ::-1]
        normalised: np.ndarray = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.scale, np.float32)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1))

    def describe(self) -> str:
        """'resize to 224 x 224, mean 123.675 116.28 103.53, scale 58.395 57.12 57.375, RGB'."""
        return (
            f"resize to {self.size[0]} x {self.size[1]}, mean {_join(self.mean)}, scale {_join(self.scale)}, "
            f"{self.channel_order.upper()}"
        )


def _join(values: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in values)


def load_rgb(source: ImageInput, max_pixels: int = MAX_PIXELS) -> tuple[str, Image.Image]:
    """(a name for reports, the image as upright 8-bit RGB) or ImageError naming the problem.

    Images over ``max_pixels`` are refused before they are decoded. Pillow's own decompression-bomb
    warning (from 89.5 MP, its ``Image.MAX_IMAGE_PIXELS``) is silenced for this call only, so the limit
    is ours; Pillow still refuses anything over twice its limit (179 MP by default) outright.
    """
    with warnings.catch_warnings():
        # Scoped to this call: the process's warning filters and Pillow's global limit stay as they are.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if isinstance(source, np.ndarray):
            return "<array>", _from_array(source, max_pixels)
        if isinstance(source, Image.Image):
            name = getattr(source, "filename", "") or "<image>"
            return name, _convert(source, name, max_pixels)
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise ImageError("the image data is empty (0 bytes)", "pass the image file's bytes")
            return "<bytes>", _decode(io.BytesIO(source), "<bytes>", max_pixels)
        if not isinstance(source, (str, os.PathLike)):
            raise ImageError(
                f"a value of type {type(source).__name__} is not an image",
                "pass a path, bytes, a PIL image or an (H, W, 3) uint8 array",
            )
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image '{path}' {_why_not_a_file(path)}", "check the path")
        return str(path), _decode(path, str(path), max_pixels)


def _why_not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file: 'not found', or what it is instead."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a loop of symbolic links"
        return "is a symbolic link to nothing" if path.is_symlink() else "not found"
    return "is a folder" if path.is_dir() else "is not a regular file"


def _identity(path: Path) -> Path:
    """What tells two paths to one file apart from two files: the resolved path, or (a symbolic link loop,
    which never resolves) the absolute one — such a path is reported when it is read, not here."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a loop, before Python 3.13
        return path.absolute()


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(source) as image:
            return _to_rgb(image, name, max_pixels)
    except Image.DecompressionBombError:  # over twice Pillow's limit: refused inside Image.open
        raise _too_large(name, None, max_pixels) from None
    except UnidentifiedImageError:
        # Pillow's message names the file object's repr (a memory address): say it in our words.
        raise ImageError(f"'{name}' is not a usable image (unknown format)", _FORMATS) from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        problem = f"'{name}' is corrupt or truncated ({_why(exc)})"
        raise ImageError(problem, "re-save or re-download the file") from None


_FORMATS = "pass a JPEG, PNG, BMP, TIFF or WebP"


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", text)[:120]  # no object reprs, no addresses


def _too_large(name: str, size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    pixels = f"has {size[0]} x {size[1]} pixels, " if size else "is "
    return ImageError(f"'{name}' {pixels}over the limit of {max_pixels:,} (decompression bomb?)", "downscale it first")


def _convert(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """A caller's PIL image: conversion failures (modes Pillow cannot turn into RGB) become ImageError."""
    try:
        return _to_rgb(image, name, max_pixels)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{name} cannot be converted to RGB ({_why(exc)})", "pass an RGB, L or RGBA image") from None


def _to_rgb(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(name, (width, height), max_pixels)
    if width == 0 or height == 0:
        raise ImageError(f"'{name}' is {width} x {height}: it has no pixels", "pass a non-empty image")
    image = ImageOps.exif_transpose(image)  # phones store portrait photos sideways plus an EXIF flag
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(np.nanmax(pixels)), 1.0)
        image = Image.fromarray(np.uint8(np.clip(np.nan_to_num(pixels) / top * 255, 0, 255)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent shows as white
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    """HWC (or HW) array, uint8 0..255; float arrays must already be in 0..1."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"array of shape {array.shape} is not an HWC image", "pass (H, W, 3) uint8 RGB")
    height, width = array.shape[:2]
    if height * width == 0:
        raise ImageError(f"array of shape {array.shape} has no pixels", "pass a non-empty (H, W, 3) image")
    if height * width > max_pixels:
        raise _too_large("<array>", (width, height), max_pixels)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageError(f"array of dtype {array.dtype} is not an image", "pass uint8 0..255 or float 0..1")
        if not np.isfinite(array).all():
            raise ImageError("the float array holds NaN or infinite values", "pass finite values in 0..1")
        array = np.uint8(np.clip(array, 0.0, 1.0) * 255 + 0.5)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array)), "<array>", max_pixels)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given, and the images inside the given folders (sorted); each file once."""
    return list(named_image_files(paths))


def named_image_files(paths: Sequence[Path]) -> dict[Path, str]:
    """Like :func:`image_files`, each with a name for its outputs, unique even on case-insensitive file
    systems: the path relative to the folder it was found in ('sub/cat.jpg' -> 'sub__cat'), the file
    name's stem for a file given directly, with the suffix kept where stems collide ('cat_jpg', 'cat_png')
    and a counter as the last resort. Characters a file name cannot safely hold become '_'."""
    found: dict[Path, tuple[str, ...]] = {}  # file -> its parts relative to where it was found
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            # A link that leads nowhere (or round in a loop) is listed too: reported when read, never lost.
            found_here = (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files = sorted(p for p in found_here if p.is_file() or (p.is_symlink() and not p.exists()))
            entries = [(f, f.relative_to(path).parts) for f in files]
        else:
            entries = [(path, (path.name,))]
        for file, parts in entries:
            key = _identity(file)
            if key not in seen:  # the same file twice (a folder and a file in it): explained once
                seen.add(key)
                found[file] = parts
    stems = ["__".join([*map(_safe, parts[:-1]), _safe(Path(parts[-1]).stem)]) for parts in found.values()]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for (file, parts), stem in zip(found.items(), stems, strict=True):
        if counts[stem.casefold()] > 1:
            stem = "__".join(map(_safe, parts))  # cat.jpg and cat.png in one folder
        name, n = stem, 1
        while name.casefold() in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name.casefold())
        names[file] = name
    return names


def _safe(part: str) -> str:
    """A path component as a file-name-safe string: letters, digits, '-' and '_' kept, anything else
    (dots, spaces, separators) becomes '_'; at most 100 characters (the end kept: it differs most)."""
    return re.sub(r"[^\w-]+", "_", part)[-100:] or "_"
