"""Turning whatever the user has (paths, PIL images, arrays) into the network's input tensor."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovxai.errors import OvxaiError

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]  # noqa: UP007 - a runtime alias
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 100_000_000  # a 10000 x 10000 photo; larger ones are refused as decompression bombs


class ImageError(OvxaiError):
    """An image that cannot be used; in a batch it is skipped, alone it is an error."""


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the network's input: resize to ``size``, then (pixel - mean) / scale."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgb: bool = True  # False: the network was trained on BGR

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(3, H, W) float32 from an RGB image."""
        resized = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32)
        if not self.rgb:
            pixels = pixels[..., ::-1]
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.scale, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_rgb(source: ImageInput, max_pixels: int = MAX_PIXELS) -> tuple[str, Image.Image]:
    """(a name for reports, the image as upright 8-bit RGB) or ImageError naming the problem."""
    if isinstance(source, np.ndarray):
        return "<array>", _from_array(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<image>", _to_rgb(source, "<image>", max_pixels)
    if isinstance(source, bytes):
        return "<bytes>", _decode(io.BytesIO(source), "<bytes>", max_pixels)
    path = Path(source)
    if not path.is_file():
        raise ImageError(f"image '{path}' not found", "check the path")
    return str(path), _decode(path, str(path), max_pixels)


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _to_rgb(Image.open(source), name, max_pixels)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        problem = f"'{name}' is not a usable image ({_why(exc)})"
        raise ImageError(problem, "pass a JPEG, PNG, BMP, TIFF or WebP") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        problem = f"'{name}' is corrupt or truncated ({_why(exc)})"
        raise ImageError(problem, "re-save or re-download the file") from None


def _why(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _to_rgb(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"'{name}' has {width} x {height} pixels, over the limit of {max_pixels:,} (decompression bomb?)",
            "downscale it first",
        )
    image = ImageOps.exif_transpose(image)  # phones store portrait photos sideways plus an EXIF flag
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        image = Image.fromarray(np.uint8(np.clip(pixels / top * 255, 0, 255)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent shows as white
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _from_array(array: np.ndarray) -> Image.Image:
    """HWC (or HW) array, uint8 0..255; float arrays must already be in 0..1."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"array of shape {array.shape} is not an HWC image", "pass (H, W, 3) uint8 RGB")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageError(f"array of dtype {array.dtype} is not an image", "pass uint8 0..255 or float 0..1")
        array = np.uint8(np.clip(array, 0.0, 1.0) * 255 + 0.5)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return _to_rgb(Image.fromarray(array[..., :4]), "<array>", MAX_PIXELS)


def image_files(paths: list[Path]) -> list[Path]:
    """Files as given, and the images inside the given folders (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found
