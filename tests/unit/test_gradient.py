"""Every gradient method's emission on small hand-built tails, run eagerly in numpy (no engine, no torch).

The oracle shares nothing with the code under test: the gradient of each class score with respect to the target map
by central finite differences of the original graph in float64 (ONNX's reference implementation runs every node),
and each method's formula written here from its paper. The hook runs in float64 too; the tolerance is the finite
differences' own error (the same with twice the step) plus the rounding of the float32 map the hook outputs.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import onnx
import pytest
from graphs import onnx_node
from tails import BATCH, TAILS, model, quantised, quantised_reference

from ovxai.conventions import GRADIENT_METHODS, SALIENCY_OUTPUT
from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX, initializers, reference_runner
from ovxai.graph.numpy_ops import NumpyBuilder, evaluate
from ovxai.graph.ops import Ops
from ovxai.graph.view import GraphView, Kind
from ovxai.hook.gradient.hook import GradientCamHook
from ovxai.hook.options import HookOptions
from ovxai.hook.tail import plan_tail, tail_logits
from ovxai.hook.target import pick_prediction

STEP = 1e-5  # finite differences' step, relative to the map's scale
BLACK = (-0.5, 0.2, 0.0)  # Integrated Grad-CAM's baseline image, per input channel


def _image(size: int = 6) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((BATCH, 3, size, size))


def _runner(model: onnx.ModelProto) -> Any:
    """ONNX's reference implementation per node; Gelu (a function op it runs only inside whole models) in numpy."""
    run = reference_runner(model)
    erf = np.vectorize(math.erf)

    def gelu(x: np.ndarray, tanh: bool) -> np.ndarray:
        if tanh:
            return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))  # type: ignore[no-any-return]
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))  # type: ignore[no-any-return]

    def run_node(node: Any, inputs: Any, unpadded: bool) -> list[np.ndarray]:
        if node.op == "Gelu":
            return [gelu(inputs[0], node.approximate).astype(inputs[0].dtype)]
        return run(node, inputs, unpadded)

    return run_node


def _float64(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in initializers(model).items()}


def _hooked(model: onnx.ModelProto, options: HookOptions) -> dict[str, np.ndarray]:
    """The patched model's outputs, the hook emitted through numpy in float64."""
    graph = ONNX.view(model)
    prediction = pick_prediction(graph, None)
    tail = plan_tail(graph, "map", prediction)
    run = _runner(model)
    values = evaluate(graph, {"x": _image()}, _float64(model), run)
    builder = NumpyBuilder(graph, values, run)
    GradientCamHook(Ops(builder), graph, tail, options, BLACK).build()
    return builder.finish()


# -- the oracle ------------------------------------------------------------------------------------


def _scores(
    graph: GraphView, run: Any, values: dict[str, np.ndarray], image: int, rows: np.ndarray, score: str
) -> np.ndarray:
    """Every class score of the tail run on ``rows`` (P, C, H, W) in place of image ``image``'s target."""
    tail = graph.descendants("map")
    current = {**values, "map": rows}
    produced = {"map"}
    for node in graph.nodes:
        if node.name not in tail:
            continue
        inputs = []
        for name in node.inputs:
            if name and name not in produced and graph.kind.get(name) is Kind.ACTIVATION:
                inputs.append(np.repeat(values[name][image : image + 1], len(rows), axis=0))  # a skip from before
            else:
                inputs.append(current[name] if name else None)
        current.update(zip(node.outputs, run(node, inputs, False), strict=False))
        produced.update(node.outputs)
    logits = current[tail_logits(graph, plan_tail(graph, "map", pick_prediction(graph, None)))].reshape(len(rows), -1)
    if score == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
    if score == "sigmoid":
        return 1 / (1 + np.exp(-logits))  # type: ignore[no-any-return]
    return logits


def _gradients(graph: GraphView, run: Any, values: dict[str, np.ndarray], score: str, step: float) -> np.ndarray:
    """(B, K, C, H, W): d score_k / d map by central differences."""
    t = values["map"]
    scale = step * max(1.0, float(np.abs(t).max()))
    out = []
    for b in range(len(t)):
        shifts = np.eye(t[b].size).reshape(-1, *t.shape[1:]) * scale
        plus = _scores(graph, run, values, b, t[b] + shifts, score)
        minus = _scores(graph, run, values, b, t[b] - shifts, score)
        out.append(((plus - minus) / (2 * scale)).T.reshape(-1, *t.shape[1:]))
    return np.stack(out)


def _method_map(method: str, g: np.ndarray, a: np.ndarray) -> np.ndarray:
    """One map (H, W) from one class's gradient g and the map a, (C, H, W), as GRADIENT-CAMS.md writes it."""
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    if method == "layercam":
        return relu((relu(g) * a).sum(0))  # type: ignore[no-any-return]
    if method == "gradcam":
        w = g.mean((1, 2))
    elif method == "xgradcam":
        w = (g * a).sum((1, 2)) / (a.sum((1, 2)) + 1e-7)
    else:  # gradcam++
        total = a.sum((1, 2))[:, None, None]
        alpha = np.where(g != 0, g**2 / (2 * g**2 + total * g**3 + 1e-6), 0.0)
        w = (alpha * relu(g)).sum((1, 2))
    return relu((w[:, None, None] * a).sum(0))  # type: ignore[no-any-return]


def _normalised(maps: np.ndarray) -> np.ndarray:
    low, high = maps.min(axis=(2, 3), keepdims=True), maps.max(axis=(2, 3), keepdims=True)
    return (maps - low) / np.where(high > low, high - low, 1.0)


def _selected(options: HookOptions, logits: np.ndarray) -> np.ndarray:
    """(B, K') class ids of the maps."""
    selection = options.selection
    if selection.ids is not None:
        return np.array([list(selection.ids)] * len(logits))
    if selection.top is not None:
        return np.argsort(-logits, axis=1, kind="stable")[:, : selection.top]
    return np.tile(np.arange(logits.shape[1]), (len(logits), 1))


@cache
def _finite_differences(name: str, score: str, step: float, fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, C, H, W) gradients of tail ``name`` at the image moved ``fraction`` of the way from the black one,
    and the map there (one evaluation per tail, score and step: every method reads the same)."""
    model = TAILS[name]()
    graph = ONNX.view(model)
    run = _runner(model)
    black = np.broadcast_to(np.array(BLACK).reshape(1, -1, 1, 1), _image().shape)
    values = evaluate(graph, {"x": black + fraction * (_image() - black)}, _float64(model), run)
    return _gradients(graph, run, values, score, step), values["map"]


def _oracle(name: str, options: HookOptions, step: float) -> np.ndarray:
    """(B, K', H, W) raw maps by the definitions."""
    model = TAILS[name]()
    graph = ONNX.view(model)
    run = _runner(model)
    values = evaluate(graph, {"x": _image()}, _float64(model), run)
    logits = values[tail_logits(graph, plan_tail(graph, "map", pick_prediction(graph, None)))]
    classes = _selected(options, logits.reshape(len(logits), -1))
    score = str(options.score)
    if options.method != "integrated-gradcam":
        g, a = _finite_differences(name, score, step)
        return np.array([[_method_map(options.method, g[b, k], a[b]) for k in ids] for b, ids in enumerate(classes)])
    steps = options.step_count
    black_map = _finite_differences(name, score, step, 0.0)[1]
    total = np.zeros((len(classes), classes.shape[1], *black_map.shape[2:]))
    for m in range(1, steps + 1):
        g, a = _finite_differences(name, score, step, m / steps)
        for b, ids in enumerate(classes):
            for k, c in enumerate(ids):
                total[b, k] += (g[b, c].mean((1, 2))[:, None, None] * (a[b] - black_map[b])).sum(0)
    return np.maximum(total / steps, 0)  # type: ignore[no-any-return]


def _check(name: str, options: HookOptions) -> None:
    got = _hooked(TAILS[name](), options)
    raw = _oracle(name, options, STEP)
    want = _normalised(raw)
    truncation = np.abs(want - _normalised(_oracle(name, options, 2 * STEP))).max()
    span = (raw.max(axis=(2, 3)) - raw.min(axis=(2, 3)))[..., None, None]
    rounding = 8 * np.finfo(np.float32).eps * np.abs(raw).max(axis=(2, 3), keepdims=True) / np.where(span > 0, span, 1)
    assert got[SALIENCY_OUTPUT].shape == want.shape
    np.testing.assert_allclose(got[SALIENCY_OUTPUT], want, atol=float(10 * truncation + rounding.max()), rtol=0)
    assert np.mean(want.max(axis=(2, 3)) == 1.0) >= 0.5, "mostly flat maps: the case tests little"


METHODS = [m for m in GRADIENT_METHODS if m != "integrated-gradcam"]


@pytest.mark.parametrize("name", TAILS)
def test_each_method_equals_its_definition_on_every_tail(name: str) -> None:
    for method in METHODS:
        _check(name, HookOptions(method=method, explain="top2"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"explain": "all"},
        {"explain": "4,0", "score": "softmax"},
        {"explain": "top3", "score": "sigmoid"},
    ],
    ids=lambda o: "-".join(o.values()),
)
@pytest.mark.parametrize("name", ["residual", "squeeze-excitation", "elementwise"])
def test_class_selection_and_scores(name: str, options: dict[str, str]) -> None:
    _check(name, HookOptions(method="gradcam", **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["residual", "vgg", "transformer"])
def test_integrated_gradcam_equals_its_definition(name: str) -> None:
    _check(name, HookOptions(method="integrated-gradcam", steps=3, explain="top2"))


def test_quantisers_pass_the_gradient_straight_through_inside_their_range() -> None:
    """Q/DQ differentiates as the Clip to its range: the same maps (the forward values after it enter no rule)."""
    for method in METHODS:
        options = HookOptions(method=method, explain="all")  # type: ignore[arg-type]
        got = _hooked(model(quantised()), options)[SALIENCY_OUTPUT]
        want = _hooked(model(quantised_reference()), options)[SALIENCY_OUTPUT]
        np.testing.assert_allclose(got, want, atol=1e-6)
    saturated = np.mean(np.abs(evaluate(ONNX.view(model(quantised())), {"x": _image()}, _float64(model(quantised())),
                                        _runner(model(quantised())))["map"]) > 1.0)  # fmt: skip
    assert saturated > 0.1, "the range must cut part of the map for the test to mean anything"


def test_the_prediction_is_the_original() -> None:
    for name, build in TAILS.items():
        m = build()
        outputs = _hooked(m, HookOptions(method="gradcam++", explain="top1"))
        graph = ONNX.view(m)
        values = evaluate(graph, {"x": _image()}, _float64(m), _runner(m))
        prediction = pick_prediction(graph, None)
        np.testing.assert_array_equal(outputs[prediction], values[prediction], err_msg=name)


def test_an_op_without_a_rule_is_refused_naming_it_and_recipro() -> None:
    nodes = [
        onnx_node("Resize", ["map", "", "factor"], ["up"], "/up/Resize", mode="nearest"),
        onnx_node("GlobalAveragePool", ["up"], ["pooled"], "/pool"),
        onnx_node("Flatten", ["pooled"], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {"factor": np.array([1, 1, 2, 2], np.float32), "w_fc": np.ones((5, 4), np.float32)}
    refused = r"method=xgradcam cannot differentiate '/up/Resize' \(Resize\) .*: no backward rule .*method=recipro"
    with pytest.raises(OvxaiError, match=refused):
        _hooked(model((nodes, weights)), HookOptions(method="xgradcam"))


def test_a_written_out_gelu_is_differentiated_as_one_op() -> None:
    """The erf GELU torch writes out (Div, Erf, Add, Mul, Mul) is one Gelu for the backward, which reads only its
    input: engines fuse the chain through its single-reader tensors, and a read inside would stop the fusion."""
    from ovxai.hook.gradient.hook import plan_gradient

    graph = ONNX.view(TAILS["transformer"]())
    plan = plan_gradient(graph, plan_tail(graph, "map", "logits"), HookOptions(method="gradcam"))
    ops = [n.op for n in plan.nodes]
    assert ops.count("Gelu") == 2 and "Erf" not in ops  # the Gelu op and the written-out one
    gelu = next(n for n in plan.nodes if n.name == "/erf_gelu/Erf/gelu")
    assert (gelu.inputs, gelu.outputs) == (("g1",), ("g2",))
    assert not {"/erf_gelu/Div", "/erf_gelu/Add", "/erf_gelu/Mul", "/erf_gelu/Mul_1"} & {n.name for n in plan.nodes}


def _ir_tail(fake: bool) -> Any:
    """An OpenVINO model written with its own ops: x -> a convolution -> 'map' -> HSwish -> FakeQuantize to
    [-0.3, 0.5] (or the Clamp to that range, its straight-through equivalent) -> a grouped convolution -> the pool
    -> a MatMul with a transposed weight: the IR-in, IR-out route, on OpenVINO's own op types. Nothing after the
    quantiser reads a forward value, so both backwards meet the same numbers."""
    import openvino as ov
    import openvino.opset13 as opset
    from graphs import ov_input, ov_named
    from tails import random_weights

    x = ov_input((BATCH, 3, 6, 6))
    weight = opset.constant(random_weights(4, 3, 3, 3, seed=1))
    conv = ov_named(opset.convolution(x, weight, [1, 1], [1, 1], [1, 1], [1, 1]), "map")
    act = opset.hswish(conv)
    if fake:
        low, high = opset.constant(np.float32(-0.3)), opset.constant(np.float32(0.5))
        cut = opset.fake_quantize(act, low, high, low, high, 256)
    else:
        cut = opset.clamp(act, -0.3, 0.5)
    grouped_weight = opset.constant(random_weights(2, 2, 2, 3, 3, seed=2))
    grouped = opset.group_convolution(cut, grouped_weight, [2, 2], [1, 0], [0, 1], [1, 1])
    pooled = opset.reduce_mean(grouped, opset.constant(np.array([2, 3])), keep_dims=False)
    logits = ov_named(opset.matmul(pooled, opset.constant(random_weights(5, 4, seed=3)), False, True), "logits")
    return ov.Model([opset.result(logits)], [x])


def test_openvino_ops_and_the_quantiser_through_the_ir_route(tmp_path: Any) -> None:
    """Exported IR to IR (OpenVINO's FakeQuantize, Clamp, HSwish, GroupConvolution with its 5-D weight, MatMul with
    transpose_b), run by OpenVINO: the quantised model's maps equal those of the model with the straight-through
    Clamp in its place, to float32 rounding, and the prediction stays the plain model's."""
    import openvino as ov

    from ovxai import export
    from ovxai.formats.openvino import OPENVINO

    x = _image().astype(np.float32)
    maps = {}
    for fake in (True, False):
        plain, out = tmp_path / f"plain-{fake}.xml", tmp_path / f"patched-{fake}.xml"
        OPENVINO.save(_ir_tail(fake), plain, fp16=False)
        result = export(plain, out, layer="map", options=HookOptions(method="gradcam"), fp16=False)
        compiled = ov.Core().compile_model(str(result.files[0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs = {o.get_any_name(): np.asarray(v) for o, v in compiled(x).items()}
        original = ov.Core().compile_model(str(plain), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
        np.testing.assert_allclose(outputs["logits"], original, rtol=1e-5, atol=1e-6)
        maps[fake] = outputs["saliency_map"]
    assert np.mean(maps[False].max(axis=(2, 3)) == 1.0) >= 0.5
    np.testing.assert_allclose(maps[True], maps[False], atol=1e-5)
