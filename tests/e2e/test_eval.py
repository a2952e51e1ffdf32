"""The evaluation harness (tools/eval): every metric on hand-made cases with known answers, Integrated
Grad-CAM and the corrected Grad-CAM++ weights against closed forms on linear networks, RISE on an analytic
black box, and the data builders. Small tensors only: the whole file runs in a few seconds."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

torch = pytest.importorskip("torch")
pytest.importorskip("torchcam")

from torch import nn

from tools.eval import data, metrics
from tools.eval.methods import (
    RISE,
    IntegratedGradCAM,
    _torchcam_gradcampp,
    gradcampp_weights,
    rise_masks,
    upsample,
)

# ------------------------------------------------------------------------------------ scalar metrics


def test_average_drop_and_increase() -> None:
    y = np.array([0.8, 0.5, 0.2])
    assert metrics.average_drop(y, y) == 0.0  # the score does not change
    assert metrics.average_drop(y, y / 2) == pytest.approx(0.5)
    assert metrics.average_drop(y, y + 0.1) == 0.0  # a rise is not a negative drop
    assert metrics.average_drop([0.5, 0.5], [0.0, 0.5]) == pytest.approx(0.5)  # mean of 1 and 0
    assert metrics.increase_in_confidence(y, y) == 0.0  # equal is not an increase
    assert metrics.increase_in_confidence(y, [0.9, 0.4, 0.3]) == pytest.approx(2 / 3)


def test_pearson_coherency_complexity() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((7, 7))
    assert metrics.pearson(a, a) == pytest.approx(1.0)
    assert metrics.pearson(a, 3 * a + 1) == pytest.approx(1.0)  # invariant to scale and offset
    assert metrics.pearson(a, -a) == pytest.approx(-1.0)
    assert metrics.pearson(a, np.ones_like(a)) == 0.0  # undefined -> 0, never NaN
    assert metrics.coherency(a, a) == pytest.approx(1.0)
    assert metrics.coherency(a, 1 - a) == pytest.approx(0.0)
    assert metrics.complexity(np.ones((5, 5))) == 1.0
    assert metrics.complexity(np.zeros((5, 5))) == 0.0
    half = np.zeros((4, 4))
    half[:2] = 1
    assert metrics.complexity(half) == 0.5


def test_adcc_matches_the_papers_table() -> None:
    assert metrics.adcc(0.0, 1.0, 0.0) == pytest.approx(1.0)
    assert metrics.adcc(1.0, 1.0, 0.0) == 0.0  # a zero term gives zero, not a division error
    # Recipro-CAM paper, ResNet-50 rows: (Drop, Coherency, Complexity) -> ADCC
    assert 100 * metrics.adcc(0.1569, 0.9668, 0.3290) == pytest.approx(80.84, abs=0.02)
    assert 100 * metrics.adcc(0.3299, 0.8280, 0.2224) == pytest.approx(75.27, abs=0.02)
    assert 100 * metrics.adcc(0.0861, 0.9812, 0.4205) == pytest.approx(78.14, abs=0.02)


def test_auc_and_normalize() -> None:
    assert metrics.auc([0.3, 0.3, 0.3]) == pytest.approx(0.3)
    assert metrics.auc(np.linspace(1, 0, 11)) == pytest.approx(0.5)
    assert metrics.auc([0, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metrics.auc([1.0])
    assert np.array_equal(metrics.normalize(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    n = metrics.normalize(np.array([2.0, 4.0, 6.0]))
    assert n.tolist() == [0.0, 0.5, 1.0]


# ------------------------------------------------------------------------------- deletion / insertion


def _object_model(obj: np.ndarray):
    """Analytic 'model': the probability is the fraction of the object's pixels that are 1 (kept)."""

    def score(batch: np.ndarray) -> np.ndarray:
        return (batch[:, 0][:, obj] == 1).mean(axis=1)

    return score


def test_deletion_on_a_model_that_counts_kept_pixels() -> None:
    image = np.ones((1, 4, 4), dtype=np.float32)
    everything = np.ones((4, 4), dtype=bool)
    # score = fraction of all pixels kept: the curve is 1 - i*step/16 whatever the map -> AUC 0.5
    auc, curve = metrics.deletion(image, np.random.default_rng(1).random((4, 4)), 4, _object_model(everything), None)
    assert curve.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert auc == pytest.approx(0.5)

    obj = np.zeros((4, 4), dtype=bool)
    obj[1:3, 1:3] = True  # 4 of 16 pixels matter
    good, bad = obj.astype(float), 1.0 - obj
    auc_good, curve = metrics.deletion(image, good, 1, _object_model(obj), np.random.default_rng(0))
    assert len(curve) == 17 and curve[0] == 1.0 and curve[-1] == 0.0
    assert auc_good == pytest.approx(((1 + 0.75 + 0.5 + 0.25) - 0.5) / 16)  # object deleted first: 0.125
    auc_bad, _ = metrics.deletion(image, bad, 1, _object_model(obj), np.random.default_rng(0))
    assert auc_bad == pytest.approx((13 + 0.75 + 0.5 + 0.25 - 0.5) / 16)  # object deleted last: 0.875


def test_insertion_is_deletion_mirrored() -> None:
    image = np.ones((1, 4, 4), dtype=np.float32)
    canvas = np.zeros_like(image)
    obj = np.zeros((4, 4), dtype=bool)
    obj[0, :] = True
    auc_good, curve = metrics.insertion(image, canvas, obj.astype(float), 1, _object_model(obj), None)
    assert curve[0] == 0.0 and curve[-1] == 1.0
    assert auc_good == pytest.approx(0.875)
    auc_bad, _ = metrics.insertion(image, canvas, 1.0 - obj, 1, _object_model(obj), None)
    assert auc_bad == pytest.approx(0.125)


def test_step_that_does_not_divide_and_batching() -> None:
    image = np.ones((1, 5, 5), dtype=np.float32)
    score = _object_model(np.ones((5, 5), dtype=bool))
    curve = metrics.perturbation_curve(image, np.zeros_like(image), np.arange(25), 4, score, batch=2)
    assert len(curve) == 8  # ceil(25 / 4) + 1
    assert curve[-1] == 0.0 and curve[-2] == pytest.approx(1 / 25)


def test_saliency_order_breaks_ties_at_random_but_keeps_the_order() -> None:
    s = np.array([0.0, 0.0, 1.0, 0.5, 0.0, 0.0])
    order = metrics.saliency_order(s, np.random.default_rng(3))
    assert order[:2].tolist() == [2, 3]
    assert sorted(order[2:].tolist()) == [0, 1, 4, 5]
    assert metrics.saliency_order(s, None)[2:].tolist() == [0, 1, 4, 5]  # without rng: raster order


def test_gaussian_blur_keeps_constants_and_smooths_an_edge() -> None:
    flat = np.full((3, 20, 20), 0.25, dtype=np.float32)
    assert np.allclose(metrics.gaussian_blur(flat), 0.25)
    edge = np.zeros((1, 20, 20), dtype=np.float32)
    edge[:, :, 10:] = 1
    row = metrics.gaussian_blur(edge)[0, 10]
    assert 0 < row[9] < row[10] < 1 and np.all(np.diff(row) >= 0)


# ------------------------------------------------------------------------------------------ pointing game


def _peak(r: int, c: int, size: int = 100) -> np.ndarray:
    m = np.zeros((size, size))
    m[r, c] = 1
    return m


def test_pointing_game_with_tolerance() -> None:
    box = (40, 30, 60, 50)  # x0, y0, x1 (excl.), y1 (excl.): columns 40..59, rows 30..49
    assert metrics.pointing_hit(_peak(35, 45), box)  # inside
    assert metrics.pointing_hit(_peak(35, 59), box, tolerance=0)  # last column is inside
    assert not metrics.pointing_hit(_peak(35, 60), box, tolerance=0)
    assert metrics.pointing_hit(_peak(35, 74), box)  # 15 px right of the last column
    assert not metrics.pointing_hit(_peak(35, 75), box)  # 16 px
    assert metrics.pointing_hit(_peak(15, 45), box)  # 15 px above
    assert not metrics.pointing_hit(_peak(19, 29), box)  # diagonal: hypot(11, 11) = 15.6 px
    assert metrics.pointing_hit(_peak(20, 30), box)  # hypot(10, 10) = 14.1 px
    assert metrics.max_location(_peak(7, 9)) == (7, 9)
    plateau = np.zeros((10, 10))
    plateau[0:4, 0:6] = 1  # a border peak after edge-replicating upsampling
    assert metrics.max_location(plateau) in {(1, 2), (1, 3), (2, 2), (2, 3)}  # its middle, not (0, 0)
    two = _peak(1, 1, 10) + _peak(8, 8, 10)
    assert metrics.max_location(two) in {(1, 1), (8, 8)}  # separate ties: one of them, not the midpoint


# --------------------------------------------------------------------------- methods with known answers


class LinearNet(nn.Module):
    """Linear up to the target (conv without bias, then an identity 'layer' to hook), GAP + FC after it."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.layer = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer(self.conv(x))), 1))


def _cam(net: LinearNet, x: torch.Tensor, cls: int, baseline: float = 0.0) -> torch.Tensor:
    """CAM of the activation difference to the baseline's: ReLU(sum_k W_ck (A_k(x) - A_k(x')))."""
    with torch.no_grad():
        a = net.conv(x)[0] - net.conv(torch.full_like(x, baseline))[0]
        return torch.relu((net.fc.weight[cls][:, None, None] * a).sum(0))


@pytest.mark.parametrize("baseline", [0.0, -1.0])
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_integrated_gradcam_on_a_linear_net_is_cam_times_a_known_factor(baseline: float, steps: int) -> None:
    """With A linear in x and S = W . GAP(A) + b, dS/dA_k = W_ck / N at every step and
    A(x_m) - A(x') = m/M (A(x) - A(x')), so L = ReLU(sum_k W_ck / N (A_k(x) - A_k(x'))) (M + 1) / (2 M)."""
    net = LinearNet().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    n = 8 * 8
    for cls in range(3):
        ig = IntegratedGradCAM(net, net.layer, baseline, steps=steps, batch=3).raw(x, cls)
        expected = _cam(net, x, cls, baseline) / n * (steps + 1) / (2 * steps)
        assert torch.allclose(ig, expected, atol=1e-6, rtol=1e-4)


def test_integrated_gradcam_equals_gradcam_and_cam_after_normalisation() -> None:
    from torchcam.methods import CAM, GradCAM

    net = LinearNet().eval()
    xn = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    x = torch.from_numpy(xn)
    cls = 1
    ig = upsample(IntegratedGradCAM(net, net.layer, 0.0, steps=5).explain(xn, cls), (8, 8))
    with GradCAM(net, "layer") as extractor:
        grad_cam = extractor(class_idx=cls, scores=net(x))[0][0].numpy()
    with CAM(net, "layer", "fc") as extractor, torch.no_grad():
        net(x)
        cam = extractor(class_idx=cls, normalized=False)[0][0]  # torchcam's CAM has no ReLU (nor has the paper)
    assert np.allclose(ig, upsample(grad_cam, (8, 8)), atol=1e-5)
    assert np.allclose(ig, upsample(torch.relu(cam).numpy(), (8, 8)), atol=1e-5)


def test_gradcampp_weights_follow_the_paper_on_a_gap_fc_head() -> None:
    """GAP + FC: g_kij = W_ck / N everywhere, so alpha = 1 / (2 + g_k sum A_k) and
    w_k = N relu(g_k) / (2 + g_k sum A_k). torchcam's own Grad-CAM++ (0.5.0) loses the division."""
    gcpp, _ = _torchcam_gradcampp()
    net = LinearNet().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cls, n = 2, 64
    with gcpp(net, "layer") as extractor:
        weights = extractor._get_weights(cls, net(x))[0][0]
        act = extractor.hook_a[0][0]
    g = net.fc.weight[cls].detach() / n
    expected = n * torch.relu(g) / (2 + g * act.sum(dim=(1, 2)))
    assert torch.allclose(weights, expected, rtol=1e-4, atol=1e-9)
    grad = g.view(1, -1, 1, 1).expand(1, -1, 8, 8)
    assert torch.allclose(gradcampp_weights(grad, act[None], grad**2, grad**3)[0], expected, rtol=1e-4, atol=1e-9)


def test_smooth_gradcampp_without_noise_is_gradcampp() -> None:
    gcpp, sgcpp = _torchcam_gradcampp()
    net = LinearNet().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with gcpp(net, "layer") as extractor:
        plain = extractor(class_idx=0, scores=net(x))[0]
    with sgcpp(net, "layer", num_samples=2, std=1e-12) as extractor:
        net(x)
        smooth = extractor(class_idx=0)[0]
    assert torch.allclose(plain, smooth, atol=1e-5)


def test_rise_on_an_analytic_black_box() -> None:
    """Score = fraction of a 4 x 4 corner that the mask leaves visible: RISE must light up that corner."""
    masks = rise_masks(400, 16, cells=4, seed=0)
    assert masks.shape == (400, 16, 16) and float(masks.min()) >= 0 and float(masks.max()) <= 1
    corner = np.zeros((16, 16), dtype=bool)
    corner[:4, :4] = True

    def probs(batch: np.ndarray) -> np.ndarray:
        p = batch[:, 0][:, corner].mean(axis=1)
        return np.stack([p, 1 - p], axis=1)

    sal = RISE(probs, masks).explain(np.ones((1, 3, 16, 16), dtype=np.float32), 0)
    assert sal.shape == (16, 16)
    assert sal[corner].mean() > sal[~corner].mean() + 0.1
    assert metrics.pointing_hit(sal, (0, 0, 4, 4), tolerance=2)


def test_upsample_normalises_every_map_to_unit_range() -> None:
    m = upsample(np.array([[0.0, 2.0], [4.0, 8.0]], dtype=np.float32), (8, 8))
    assert m.shape == (8, 8) and m.min() == 0.0 and m.max() == pytest.approx(1.0)
    assert not upsample(np.zeros((2, 2), dtype=np.float32), (4, 4)).any()


# ---------------------------------------------------------------------------------------------------- data


def test_labels_and_objects() -> None:
    assert data.class_index("Egyptian cat") == 285
    assert data.class_index("missile") == 657  # not 'projectile, missile'
    for photo, (x0, y0, x1, y1), label in data.OBJECTS.values():
        h, w = data.load_photo(photo).shape[:2]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        data.class_index(label)


def test_placement_keeps_boxes_apart() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        boxes = data._place([(80, 60), (60, 90)], 224, 30, rng)
        assert boxes is not None
        (a0, b0, a1, b1), (c0, d0, c1, d1) = boxes
        assert a1 <= 224 and b1 <= 224 and c1 <= 224 and d1 <= 224
        assert c0 >= a1 + 30 or a0 >= c1 + 30 or d0 >= b1 + 30 or b0 >= d1 + 30


def test_fidelity_set_is_seeded() -> None:
    a = data.fidelity_set(14, 64, seed=5)
    b = data.fidelity_set(14, 64, seed=5)
    assert [s.name for s in a][:2] == ["chelsea", "coffee"] and a[-1].name.endswith("~1")
    assert all(s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8 for s in a)
    assert all(np.array_equal(s.image, t.image) for s, t in zip(a, b, strict=True))


def test_pointing_set_boxes_hold_the_pasted_objects() -> None:
    seen: list[np.ndarray] = []

    def predict(image: np.ndarray) -> np.ndarray:
        seen.append(image)
        p = np.zeros(1000)
        p[[data.class_index(label) for _, _, label in data.OBJECTS.values()]] = 1 / len(data.OBJECTS)
        return p

    trials, rejected = data.pointing_set(4, 224, seed=1, predict=predict)
    assert len(trials) == 4 and rejected == 0
    for t in trials:
        x0, y0, x1, y1 = t.box
        assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
        assert 0.26 * 224 - 1 <= max(x1 - x0, y1 - y0) <= 0.44 * 224 + 1
        assert t.label in t.name and math.isfinite(t.cls)
