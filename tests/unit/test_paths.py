"""Every path's emission on small hand-built graphs, run eagerly in numpy (no engine, no torch).

The oracle is Recipro-CAM by definition: the original graph run N times with the target replaced by each masked
copy (ONNX's reference implementation runs every node). The mosaic must equal it, every other path must equal
the mosaic, and the prediction must stay the original's. Tolerances come from the case's own float32 rounding:
the oracle run in float64 beside float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from graphs import conv_node, onnx_model, onnx_node, random_weights

from ovxai.conventions import SALIENCY_OUTPUT
from ovxai.formats.onnx import ONNX, initializers, reference_runner
from ovxai.graph.numpy_ops import NumpyBuilder, evaluate
from ovxai.graph.ops import Ops
from ovxai.graph.view import GraphView
from ovxai.hook.options import HookOptions
from ovxai.hook.paths import CNN_PATHS, choose, survey
from ovxai.hook.paths.path import Declined
from ovxai.hook.recipro import ReciproCamHook
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import pick_prediction, resolve

BATCH, SIZE, C, CLASSES = 2, 6, 4, 5


def _model(tail: list[onnx.NodeProto], weights: dict[str, np.ndarray], size: int = SIZE) -> onnx.ModelProto:
    """x (2, 3, size, size) -> Conv 3x3 -> Relu -> 'map' (2, 4, size, size), the target, then ``tail`` to 'logits'
    (2, 5)."""
    stem = [
        conv_node("x", "w_stem", "stem", "/stem/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Relu", ["stem"], ["map"], "/features/Relu"),
    ]
    weights = {"w_stem": random_weights(C, 3, 3, 3, seed=11), **weights}
    return onnx_model([*stem, *tail], {"x": (BATCH, 3, size, size)}, ["logits"], weights)


def _head(pooled: str, features: int) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """Flatten + a linear classifier on ``pooled``."""
    nodes = [
        onnx_node("Flatten", [pooled], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    return nodes, {"w_fc": random_weights(CLASSES, features, seed=12), "b_fc": random_weights(CLASSES, seed=13)}


def _gap(
    before: list[onnx.NodeProto], source: str, weights: dict[str, np.ndarray], size: int = SIZE
) -> onnx.ModelProto:
    head, head_weights = _head("pooled", C)
    pool = onnx_node("GlobalAveragePool", [source], ["pooled"], "/pool")
    return _model([*before, pool, *head], {**weights, **head_weights}, size)


def _positionwise() -> onnx.ModelProto:
    """1 x 1 conv, BatchNorm, Relu, then the global pool: the mean path with a background."""
    nodes = [
        conv_node("map", "w_pw", "pw", "/pw/Conv"),
        onnx_node("BatchNormalization", ["pw", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], "/bn"),
        onnx_node("Relu", ["bn"], ["act"], "/act"),
    ]
    stats = {"bn_s": random_weights(C, seed=2), "bn_b": random_weights(C, seed=3), "bn_m": random_weights(C, seed=4)}
    return _gap(
        nodes, "act", {"w_pw": random_weights(C, C, 1, 1, seed=1), **stats, "bn_v": np.full(C, 0.5, np.float32)}
    )


def _class_major() -> onnx.ModelProto:
    """SqueezeNet's head: a 1 x 1 convolution to the classes, the global pool, a flatten: the logits."""
    nodes = [
        conv_node("map", "w_cls", "cls", "/cls/Conv"),
        onnx_node("GlobalAveragePool", ["cls"], ["pooled"], "/pool"),
        onnx_node("Flatten", ["pooled"], ["logits"], "/Flatten"),
    ]
    return _model(nodes, {"w_cls": random_weights(CLASSES, C, 1, 1, seed=1)})


def _after_pool() -> onnx.ModelProto:
    """A per-channel product after the pool (as a quantiser would be): run on the pooled map."""
    head, weights = _head("scaled", C)
    nodes = [
        onnx_node("GlobalAveragePool", ["map"], ["pooled"], "/pool"),
        onnx_node("Mul", ["pooled", "s"], ["scaled"], "/s"),
    ]
    return _model([*nodes, *head], {**weights, "s": random_weights(1, C, 1, 1, seed=1)})


def _linear(biased_conv: bool) -> onnx.ModelProto:
    """Flatten + a product with every position's features (VGG's head): without and with a background."""
    nodes: list[onnx.NodeProto] = []
    weights: dict[str, np.ndarray] = {}
    source = "map"
    if biased_conv:
        nodes.append(conv_node("map", "w_pw", "pw", "/pw/Conv"))
        nodes[-1].input.append("b_pw")
        weights = {"w_pw": random_weights(C, C, 1, 1, seed=1), "b_pw": random_weights(C, seed=2)}
        source = "pw"
    nodes.append(onnx_node("Relu", [source], ["act"], "/act"))
    head, head_weights = _head("act", C * SIZE * SIZE)
    return _model([*nodes, *head], {**weights, **head_weights})


def _windows() -> onnx.ModelProto:
    """Two biased 3 x 3 convolutions (the second strided) before the global pool on a 10 x 10 map: the windows
    path over a non-zero background (a Gaussian copy's 3 x 3 footprint grows to 5 x 5, then 3 x 3 of 5 x 5)."""
    nodes = [
        onnx_node("Conv", ["map", "w1", "b1"], ["c1"], "/c1/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Relu", ["c1"], ["r1"], "/r1"),
        onnx_node("Conv", ["r1", "w2", "b2"], ["c2"], "/c2/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        onnx_node("Relu", ["c2"], ["r2"], "/r2"),
    ]
    weights = {"w1": random_weights(C, C, 3, 3, seed=1), "w2": random_weights(C, C, 3, 3, seed=2)}
    return _gap(nodes, "r2", {**weights, "b1": random_weights(C, seed=3), "b2": random_weights(C, seed=4)}, size=10)


def _residual() -> onnx.ModelProto:
    """A conv whose output is added to the stem's (a skip from before the target): the mosaic, the skip repeated."""
    nodes = [
        conv_node("map", "w1", "c1", "/c1/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Add", ["c1", "stem"], ["sum"], "/add"),
        onnx_node("Relu", ["sum"], ["out"], "/out"),
    ]
    return _gap(nodes, "out", {"w1": random_weights(C, C, 3, 3, seed=1)})


def _max_pooled() -> onnx.ModelProto:
    """A 2 x 2 max pool before the classifier: only the mosaic applies."""
    head, weights = _head("pooled", C * 9)
    return _model(
        [onnx_node("MaxPool", ["map"], ["pooled"], "/pool", kernel_shape=[2, 2], strides=[2, 2]), *head], weights
    )


MODELS = {
    "positionwise-mean": (_positionwise, "mean"),
    "class-major-mean": (_class_major, "mean"),
    "after-pool-mean": (_after_pool, "mean"),
    "linear": (lambda: _linear(False), "linear"),
    "linear-background": (lambda: _linear(True), "linear"),
    "windows": (_windows, "windows"),
    "residual-mosaic": (_residual, "mosaic"),
    "max-pool-mosaic": (_max_pooled, "mosaic"),
}
OPTIONS = [
    {"mask": "onehot", "score": "logits"},
    {"mask": "gaussian", "score": "logits"},
    {"mask": "gaussian", "score": "softmax", "explain": "top2"},
    {"mask": "onehot", "score": "sigmoid", "explain": "3,1"},
    {"mask": "gaussian", "score": "logits", "explain": "top3", "saliency_dtype": "float32"},
]


def _image(model: onnx.ModelProto) -> np.ndarray:
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    return np.random.default_rng(0).standard_normal((BATCH, 3, size, size)).astype(np.float32)


def _hooked(model: onnx.ModelProto, options: HookOptions) -> tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The path taken, the patched model's outputs and the original's tensors, evaluated in numpy."""
    graph = ONNX.view(model)
    prediction = pick_prediction(graph, None)
    tail = plan_tail(graph, resolve(graph, prediction, "features").tensor, prediction)
    choice = choose(CNN_PATHS, graph, tail, options)
    run = reference_runner(model)
    values = evaluate(graph, {"x": _image(model)}, initializers(model), run)
    builder = NumpyBuilder(graph, values, run)
    ReciproCamHook(Ops(builder), graph, tail, options, choice).build()
    return choice.name, builder.finish(), values


def _oracle(model: onnx.ModelProto, options: HookOptions, dtype: type[np.floating[Any]]) -> np.ndarray:
    """Recipro-CAM by definition: the graph re-run from the target with each masked copy, then scored."""
    graph = ONNX.view(model)
    run = reference_runner(model)
    constants = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in initializers(model).items()}
    values = evaluate(graph, {"x": _image(model).astype(dtype)}, constants, run)
    t = values["map"]
    h, w = t.shape[2:]
    rows, cols = np.divmod(np.arange(h * w), w)
    reach = 0 if options.mask == "onehot" else 1
    scores = []
    for i, j in zip(rows, cols, strict=True):
        mask = np.zeros((h, w), dtype)
        for di in range(-reach, reach + 1):
            for dj in range(-reach, reach + 1):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    mask[i + di, j + dj] = (2 - abs(di)) * (2 - abs(dj)) / 16 if reach else 1
        scores.append(_run_from(graph, run, values, {"map": t * mask}))
    logits = np.stack(scores, axis=2)  # (B, K, N)
    if options.score == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        logits = e / e.sum(axis=1, keepdims=True)
    elif options.score == "sigmoid":
        logits = 1 / (1 + np.exp(-logits))
    selection = options.selection
    if selection.ids is not None:
        logits = logits[:, list(selection.ids)]
    elif selection.top is not None:
        order = np.argsort(-values["logits"], axis=1, kind="stable")[:, : selection.top]
        logits = np.take_along_axis(logits, order[:, :, None], axis=1)
    low, high = logits.min(axis=2, keepdims=True), logits.max(axis=2, keepdims=True)
    return ((logits - low) / np.where(high > low, high - low, 1)).reshape(*logits.shape[:2], h, w)


def _run_from(graph: GraphView, run: Any, values: dict[str, np.ndarray], changed: dict[str, np.ndarray]) -> np.ndarray:
    current = {**values, **changed}
    tail = graph.descendants("map")
    for node in graph.nodes:
        if node.name in tail:
            outs = run(node, [current[i] if i else None for i in node.inputs], False)
            current.update(zip(node.outputs, outs, strict=True))
    return current["logits"]


@pytest.mark.parametrize("options", OPTIONS, ids=["-".join(o.values()) for o in OPTIONS])
@pytest.mark.parametrize("name", MODELS)
def test_each_path_equals_the_oracle_and_keeps_the_prediction(name: str, options: dict[str, str]) -> None:
    build, expected_path = MODELS[name]
    model, opts = build(), HookOptions(**options)  # type: ignore[arg-type]
    path, outputs, values = _hooked(model, opts)
    assert path == expected_path
    oracle = _oracle(model, opts, np.float32)
    rounding = np.abs(oracle - _oracle(model, opts, np.float64)).max()
    tolerance = max(1e-5, 8 * rounding)
    np.testing.assert_allclose(outputs[SALIENCY_OUTPUT], oracle, atol=tolerance)
    mosaic = _hooked(model, HookOptions(**{**options, "path": "mosaic"}))[1]  # type: ignore[arg-type]
    np.testing.assert_allclose(mosaic[SALIENCY_OUTPUT], oracle, atol=tolerance)
    if path == "linear":  # the original product is summed per position first: equal to rounding
        np.testing.assert_allclose(outputs["logits"], values["logits"], rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(outputs["logits"], values["logits"])
    selection = opts.selection
    if selection.ids is not None:
        np.testing.assert_array_equal(outputs["saliency_classes"], [list(selection.ids)] * BATCH)
    elif selection.top is not None:
        top = np.argsort(-values["logits"], axis=1, kind="stable")[:, : selection.top]
        np.testing.assert_array_equal(outputs["saliency_classes"], top)


def test_feature_vector_is_exposed_where_the_copies_end_at_a_global_pool() -> None:
    outputs = _hooked(_positionwise(), HookOptions())[1]
    np.testing.assert_array_equal(
        outputs["feature_vector"], _hooked(_positionwise(), HookOptions())[2]["pooled"][:, :, 0, 0]
    )
    assert "feature_vector" not in _hooked(_max_pooled(), HookOptions())[1]


def test_uint8_maps_are_the_rounded_float_maps() -> None:
    model = _windows()
    floats = _hooked(model, HookOptions())[1][SALIENCY_OUTPUT]
    quantised = _hooked(model, HookOptions(saliency_dtype="uint8"))[1][SALIENCY_OUTPUT]
    assert quantised.dtype == np.uint8
    np.testing.assert_array_equal(quantised, np.round(floats * 255).astype(np.uint8))


def test_survey_says_why_each_earlier_path_declined() -> None:
    graph = ONNX.view(_max_pooled())
    tail = plan_tail(graph, "map", "logits")
    reasons = {
        c.name: c.plan.reason for c in survey(CNN_PATHS, graph, tail, HookOptions()) if isinstance(c.plan, Declined)
    }
    assert set(reasons) == {"mean", "linear", "windows"}
    assert "'/pool' (MaxPool), is not a global average pool" in reasons["mean"]
    assert "is neither a 2-D convolution nor a per-position op" in reasons["windows"]
    choice = choose(CNN_PATHS, graph, tail, HookOptions())
    assert choice.name == "mosaic" and [name for name, _ in choice.declined] == ["mean", "linear", "windows"]


def test_a_path_asked_for_that_does_not_apply_is_refused_with_its_reason() -> None:
    from ovxai.errors import OvxaiError

    graph = ONNX.view(_max_pooled())
    tail = plan_tail(graph, "map", "logits")
    with pytest.raises(
        OvxaiError, match=r"path=mean does not apply here: .* is not a global average pool; use path=auto"
    ):
        choose(CNN_PATHS, graph, tail, HookOptions(path="mean"))
    with pytest.raises(OvxaiError, match="path=tokens is not a path of this model"):
        choose(CNN_PATHS, graph, tail, HookOptions(path="tokens"))
