"""Saliency pictures: colour maps (numpy look-up tables), overlays on the photo, contact sheets."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Turbo (Google, Apache-2.0): the published polynomial approximation, evaluated once into a LUT.
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def _lut(name: str) -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    if name == "turbo":
        rgb = _TURBO @ np.stack([x**k for k in range(6)])
    elif name == "jet":
        rgb = np.stack([1.5 - np.abs(4 * x - 3), 1.5 - np.abs(4 * x - 2), 1.5 - np.abs(4 * x - 1)])
    elif name == "gray":
        rgb = np.stack([x, x, x])
    else:
        raise ValueError(f"unknown colormap '{name}' (turbo, jet, gray)")
    return np.uint8(np.clip(rgb.T, 0.0, 1.0) * 255 + 0.5)


COLORMAPS = {name: _lut(name) for name in ("turbo", "jet", "gray")}


def colorize(saliency: np.ndarray, colormap: str = "turbo") -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) uint8 colours."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap '{colormap}' (choose from {', '.join(COLORMAPS)})")
    index = np.uint8(np.clip(np.nan_to_num(saliency), 0.0, 1.0) * 255 + 0.5)
    return COLORMAPS[colormap][index]


def overlay(photo: Image.Image, saliency: np.ndarray, alpha: float = 0.5, colormap: str = "turbo") -> Image.Image:
    """The photo with the map (already at the photo's size) blended on top."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap '{colormap}' (choose from {', '.join(COLORMAPS)})")
    index = np.uint8(np.clip(np.nan_to_num(saliency), 0.0, 1.0) * 255 + 0.5)
    heat = Image.fromarray(index, mode="L").convert("P")  # the LUT as a palette: PIL maps it in C
    heat.putpalette(COLORMAPS[colormap].tobytes())
    return Image.blend(photo.convert("RGB"), heat.convert("RGB"), alpha)


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w) -> (T, height, width), bilinear with pixel centres aligned and edges clamped, as an
    image resize does. Two gathers and blends in numpy: no BLAS, whose threads would fight the
    inference engine's for the cores."""
    maps = maps.astype(np.float32, copy=False)
    low, high, frac = _bilinear_taps(maps.shape[1], height)
    rows = maps[:, low, :] * (1 - frac)[:, None] + maps[:, high, :] * frac[:, None]
    low, high, frac = _bilinear_taps(maps.shape[2], width)
    return rows[:, :, low] * (1 - frac) + rows[:, :, high] * frac


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(src).astype(np.intp)
    return low, np.minimum(low + 1, size_in - 1), (src - low).astype(np.float32)


def contact_sheet(tiles: list[tuple[Image.Image, str]], columns: int = 4, tile: int = 256) -> Image.Image:
    """A grid of (picture, caption) tiles, each fitted into tile x tile with its caption below."""
    font = ImageFont.load_default()
    caption_height = 18
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (picture, caption) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption_height)
        thumb = picture.copy()
        thumb.thumbnail((tile, tile))
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        text = caption if draw.textlength(caption, font=font) <= tile - 4 else caption[: tile // 7] + "..."
        draw.text((x + 2, y + tile + 2), text, fill="black", font=font)
    return sheet
