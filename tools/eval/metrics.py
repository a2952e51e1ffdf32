"""Faithfulness and localisation metrics for saliency maps, in plain numpy.

Every function takes maps already upsampled to the input resolution and scaled to [0, 1] (see
``normalize``), and class scores that are softmax *probabilities* of the explained class. They are kept
free of any model so that ``tests/e2e/test_eval.py`` can check each one on hand-made cases with known answers.

Definitions (higher ↑ / lower ↓ is better):

* Average Drop ↓ and Increase in Confidence ↑ (Chattopadhay et al., Grad-CAM++, WACV 2018): ``Y`` is
  the probability on the image, ``O`` on the image multiplied by its map.
* Coherency ↑ (Poppi et al., CVPRW 2021): Pearson correlation between the map of the image and the map of
  the image multiplied by its map, mapped from [-1, 1] to [0, 1] as ``(r + 1) / 2`` like the authors'
  reference code, so that ADCC (a harmonic mean) is defined.
* Complexity ↓: mean of the [0, 1] map (its L1 norm divided by its size).
* ADCC ↑: ``3 / (1/Coherency + 1/(1 - Complexity) + 1/(1 - AverageDrop))``.
* Deletion ↓ / Insertion ↑ (Petsiuk et al., RISE, BMVC 2018): area under the probability curve as
  pixels are moved, most salient first, from a start canvas to a finish canvas; see ``perturbation_curve``.
* Pointing game ↑ (Zhang et al., 2016): the map's maximum lies in the object's box, with a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

ScoreFn = Callable[[NDArray[np.float32]], NDArray[np.float64]]
"""Maps a batch of model inputs (N, C, H, W) to the explained class's probability, shape (N,)."""


def normalize(saliency: ArrayLike) -> NDArray[np.float32]:
    """Min-max scale a map to [0, 1]; a constant map becomes all zeros (never NaN)."""
    s = np.asarray(saliency, dtype=np.float32)
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def average_drop(y: ArrayLike, o: ArrayLike) -> float:
    """Mean over images of ``max(0, Y - O) / Y``: how much of the class probability is lost when only the
    regions the map highlights are shown. 0 when the masked image is at least as convincing."""
    y_, o_ = np.asarray(y, dtype=np.float64), np.asarray(o, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, y_ - o_) / y_))


def increase_in_confidence(y: ArrayLike, o: ArrayLike) -> float:
    """Fraction of images whose class probability *rises* when the image is multiplied by its map."""
    return float(np.mean(np.asarray(o, dtype=np.float64) > np.asarray(y, dtype=np.float64)))


def pearson(a: ArrayLike, b: ArrayLike) -> float:
    """Pearson correlation of two maps (flattened). 0 when either map is constant (undefined correlation)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


def coherency(a: ArrayLike, b: ArrayLike) -> float:
    """``(pearson(a, b) + 1) / 2`` in [0, 1]: ``a`` is the map of the image, ``b`` the map (same method,
    same class) of the image multiplied by ``a``. A faithful map should not move when only what it
    highlights is kept."""
    return (pearson(a, b) + 1.0) / 2.0


def complexity(saliency: ArrayLike) -> float:
    """Mean of a [0, 1] map: the share of the image the map spreads over (lower = more compact)."""
    return float(np.mean(np.abs(np.asarray(saliency, dtype=np.float64))))


def adcc(avg_drop: float, coher: float, compl: float) -> float:
    """Harmonic mean of Coherency, 1 - Complexity and 1 - Average Drop (Poppi et al.). 0 if any term is 0."""
    terms = (coher, 1.0 - compl, 1.0 - avg_drop)
    if min(terms) <= 0:
        return 0.0
    return 3.0 / sum(1.0 / t for t in terms)


def auc(curve: ArrayLike) -> float:
    """Area under a curve sampled at evenly spaced points of [0, 1] (trapezoid rule), as in RISE."""
    c = np.asarray(curve, dtype=np.float64)
    if c.size < 2:
        raise ValueError("a curve needs at least two points")
    return float((c.sum() - (c[0] + c[-1]) / 2.0) / (c.size - 1))


def saliency_order(saliency: ArrayLike, rng: np.random.Generator | None = None) -> NDArray[np.int64]:
    """Flat pixel indices, most salient first. Ties are broken at random (seeded ``rng``) rather than in
    raster order, so that a map with a large flat zero region (Grad-CAM after its ReLU) does not delete or
    insert its zeros top-left first by accident."""
    s = np.asarray(saliency, dtype=np.float64).ravel()
    tie = rng.random(s.size) if rng is not None else np.arange(s.size, dtype=np.float64)
    return np.lexsort((tie, -s)).astype(np.int64)


def perturbation_curve(
    start: NDArray[np.float32],
    finish: NDArray[np.float32],
    order: NDArray[np.int64],
    step: int,
    score_fn: ScoreFn,
    batch: int = 32,
) -> NDArray[np.float64]:
    """Scores while pixels move from ``start`` to ``finish`` (both (C, H, W)) in ``order``, ``step`` pixels
    at a time: point i has the first ``min(i * step, H * W)`` pixels of ``order`` taken from ``finish``.
    Returns ``ceil(H * W / step) + 1`` scores, the first on ``start`` and the last on ``finish``.

    Deletion: start = image, finish = the blank canvas. Insertion: start = the blank (blurred) canvas,
    finish = image."""
    _, h, w = start.shape
    n = h * w
    steps = -(-n // step)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(1, 1, h, w)
    scores = np.empty(steps + 1, dtype=np.float64)
    for lo in range(0, steps + 1, batch):
        counts = np.minimum(np.arange(lo, min(lo + batch, steps + 1)) * step, n).reshape(-1, 1, 1, 1)
        images = np.where(rank < counts, finish[None], start[None]).astype(np.float32)
        scores[lo : lo + len(counts)] = score_fn(images)
    return scores


def deletion(
    image: NDArray[np.float32], saliency: ArrayLike, step: int, score_fn: ScoreFn, rng: np.random.Generator | None
) -> tuple[float, NDArray[np.float64]]:
    """Deletion AUC ↓: the most salient pixels are replaced first by 0 (the model's input mean: a gray
    pixel of value 127 here). A faithful map makes the probability fall fast. Returns (AUC, curve)."""
    curve = perturbation_curve(image, np.zeros_like(image), saliency_order(saliency, rng), step, score_fn)
    return auc(curve), curve


def insertion(
    image: NDArray[np.float32],
    blurred: NDArray[np.float32],
    saliency: ArrayLike,
    step: int,
    score_fn: ScoreFn,
    rng: np.random.Generator | None,
) -> tuple[float, NDArray[np.float64]]:
    """Insertion AUC ↑: starting from a blurred copy, the most salient pixels of the image are put back
    first. A faithful map makes the probability rise fast. Returns (AUC, curve)."""
    curve = perturbation_curve(blurred, image, saliency_order(saliency, rng), step, score_fn)
    return auc(curve), curve


def gaussian_blur(image: NDArray[np.float32], sigma: float = 5.0, radius: int = 5) -> NDArray[np.float32]:
    """RISE's insertion canvas: each channel blurred by a Gaussian of std ``sigma`` cut at ``radius`` px
    (RISE: an 11 x 11 kernel, sigma 5), borders replicated."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(ch, sigma=sigma, truncate=radius / sigma, mode="nearest") for ch in image]).astype(
        np.float32
    )


def max_location(saliency: ArrayLike) -> tuple[int, int]:
    """(row, col) of the map's maximum. When several pixels share the maximum (bilinear upsampling with
    edge replication turns a border cell's peak into a flat plateau), the tied pixel nearest to their
    centroid: the middle of a plateau rather than its top-left corner, and still a true maximum when the
    ties are separate peaks."""
    s = np.asarray(saliency, dtype=np.float64)
    rows, cols = np.nonzero(s >= s.max())
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(rows[k]), int(cols[k])


def pointing_hit(saliency: ArrayLike, box: tuple[int, int, int, int], tolerance: float = 15.0) -> bool:
    """Pointing game: the map's maximum is within ``tolerance`` pixels (Euclidean distance) of the object's
    box ``(x0, y0, x1, y1)``, pixel centres at integer coordinates, x1 and y1 exclusive."""
    r, c = max_location(saliency)
    x0, y0, x1, y1 = box
    dx = max(x0 - c, 0, c - (x1 - 1))
    dy = max(y0 - r, 0, r - (y1 - 1))
    return bool(np.hypot(dx, dy) <= tolerance)
