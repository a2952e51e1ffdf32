"""The evaluation images, built from real photos that ship inside installed packages (nothing is downloaded
and nothing is committed as an image): scikit-image's sample photos and textures, and matplotlib's
Grace Hopper portrait. Everything is drawn from seeded generators, so a run is reproducible.

* Fidelity set: each photo resized (shorter side) and centre-cropped to the model input; when more images
  are asked for than there are photos, random crops (30-100 % of the area, aspect 3:4 to 4:3) with random
  horizontal flips of the same photos follow.
* Pointing-game set: object crops with known boxes (the cat's head, the espresso cup, the tripod, the
  motorcycle, the rocket) pasted at random scales and places, two different objects per canvas, onto a
  random crop of a real texture (brick, grass, gravel). The box is where the crop was pasted. Each object
  is one trial explaining its own class; a trial is kept only if the model ranks that class in its top 5
  on the composite, so every method is asked about something the model does see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LABELS_FILE = ROOT / "models/imagenet1k_labels.txt"

# photo -> (source, crop (x0, y0, x1, y1) in the source photo, ImageNet class the crop shows)
OBJECTS: dict[str, tuple[str, tuple[int, int, int, int], str]] = {
    "cat": ("chelsea", (40, 10, 400, 300), "Egyptian cat"),
    "espresso": ("coffee", (160, 10, 430, 310), "espresso"),
    "tripod": ("camera", (210, 130, 410, 512), "tripod"),
    "moped": ("motorcycle", (90, 95, 690, 455), "moped"),
    "missile": ("rocket", (270, 110, 370, 415), "missile"),
}
TEXTURES = ("brick", "grass", "gravel")
PHOTOS = (
    "chelsea", "coffee", "motorcycle", "camera", "grace_hopper", "rocket",
    "astronaut", "clock", "coins", "immunohistochemistry", "hubble_deep_field", "retina",
)  # fmt: skip


@dataclass
class Sample:
    """One fidelity image (H, W, 3) uint8 RGB, at the model's input size."""

    name: str
    image: NDArray[np.uint8]


@dataclass
class Trial:
    """One pointing-game trial: explain ``cls`` on ``image``; the object is at ``box`` (x0, y0, x1, y1)."""

    name: str
    image: NDArray[np.uint8]
    box: tuple[int, int, int, int]
    cls: int
    label: str


def labels() -> list[str]:
    """ImageNet-1k class names, index = class id."""
    return LABELS_FILE.read_text().splitlines()


def class_index(name: str) -> int:
    """Class id whose first synonym is ``name`` (e.g. 'missile' is 657, not 'projectile, missile')."""
    for i, line in enumerate(labels()):
        if line.split(",")[0].strip() == name:
            return i
    raise KeyError(name)


def load_photo(name: str) -> NDArray[np.uint8]:
    """A bundled photo as (H, W, 3) uint8 RGB (grey photos are repeated over three channels)."""
    import skimage.data

    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    elif name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            image = np.asarray(Image.open(f).convert("RGB"))
    else:
        image = getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def resize(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """Bilinear resize (PIL, antialiased when shrinking)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def center_crop(image: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """Shorter side to ``size``, then the central ``size`` x ``size`` square: the usual ImageNet evaluation view."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    r = resize(image, nw, nh)
    y, x = (nh - size) // 2, (nw - size) // 2
    return r[y : y + size, x : x + size]


def random_view(image: NDArray[np.uint8], size: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """A random crop of 30-100 % of the area with aspect 3:4..4:3, flipped half the time, resized to size."""
    h, w = image.shape[:2]
    for _ in range(50):
        area = rng.uniform(0.3, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if cw <= w and ch <= h:
            break
    else:
        cw = ch = min(h, w)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = resize(image[y : y + ch, x : x + cw], size, size)
    return view[:, ::-1].copy() if rng.random() < 0.5 else view


def fidelity_set(count: int, size: int, seed: int) -> list[Sample]:
    """``count`` images: the centre view of each photo in ``PHOTOS`` order, then random views of them."""
    rng = np.random.default_rng(seed)
    photos = {name: load_photo(name) for name in PHOTOS}
    samples = [Sample(name, center_crop(photos[name], size)) for name in PHOTOS[:count]]
    i = 0
    while len(samples) < count:
        name = PHOTOS[i % len(PHOTOS)]
        samples.append(Sample(f"{name}~{i // len(PHOTOS) + 1}", random_view(photos[name], size, rng)))
        i += 1
    return samples


def _texture(size: int, rng: np.random.Generator) -> tuple[str, NDArray[np.uint8]]:
    name = TEXTURES[int(rng.integers(len(TEXTURES)))]
    tex = load_photo(name)
    h, w = tex.shape[:2]
    side = int(rng.integers(size, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return name, resize(tex[y : y + side, x : x + side], size, size)


def _place(
    shapes: list[tuple[int, int]], size: int, gap: int, rng: np.random.Generator, attempts: int = 100
) -> list[tuple[int, int, int, int]] | None:
    """Random boxes for objects of (w, h) inside the canvas, at least ``gap`` px apart, or None if
    ``attempts`` random layouts all collide."""

    def apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
        return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap

    for _ in range(attempts):
        boxes: list[tuple[int, int, int, int]] = []
        for w, h in shapes:
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            boxes.append((x, y, x + w, y + h))
        if all(apart(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]):
            return boxes
    return None


def pointing_set(
    count: int,
    size: int,
    seed: int,
    predict: Callable[[NDArray[np.uint8]], NDArray[np.float64]],
    gap: int = 30,
    max_canvases: int = 200,
) -> tuple[list[Trial], int]:
    """``count`` pointing trials from random two-object composites; ``predict`` maps one (H, W, 3) uint8
    image to class probabilities. ``gap`` (px) keeps two boxes' 15 px tolerance zones apart. Returns the
    trials and how many candidate trials were rejected by the top-5 rule."""
    rng = np.random.default_rng(seed)
    crops = {}
    for key, (photo, (x0, y0, x1, y1), label) in OBJECTS.items():
        crops[key] = (load_photo(photo)[y0:y1, x0:x1], class_index(label), label)
    trials: list[Trial] = []
    rejected = 0
    for canvas_id in range(max_canvases):
        if len(trials) >= count:
            break
        keys = [str(k) for k in rng.choice(list(OBJECTS), size=2, replace=False)]
        shapes = []
        for key in keys:
            crop = crops[key][0]
            longer = rng.uniform(0.26, 0.44) * size  # the object's longer side: 58-99 px at 224
            scale = longer / max(crop.shape[:2])
            shapes.append((max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale))))
        boxes = _place(shapes, size, gap, rng)
        if boxes is None:
            continue
        tex_name, canvas = _texture(size, rng)
        canvas = canvas.copy()
        for key, (bx0, by0, bx1, by1) in zip(keys, boxes, strict=True):
            canvas[by0:by1, bx0:bx1] = resize(crops[key][0], bx1 - bx0, by1 - by0)
        probs = predict(canvas)
        top5 = set(np.argsort(probs)[::-1][:5].tolist())
        for key, box in zip(keys, boxes, strict=True):
            _, cls, label = crops[key]
            if cls not in top5:
                rejected += 1
                continue
            if len(trials) < count:
                trials.append(Trial(f"{'+'.join(keys)}@{tex_name}#{canvas_id}:{key}", canvas, box, cls, label))
    if len(trials) < count:
        raise RuntimeError(f"only {len(trials)} of {count} pointing trials passed the top-5 rule")
    return trials, rejected
