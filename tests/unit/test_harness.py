"""The benchmarks' timing loop (tools/harness.py, tools/engines.py): rotation, warm-up, paired ratios, the noise
rule's fallback, per-call statistics of repeated runs, on a real one-op model in OpenVINO and ONNX Runtime.
Nothing here asserts a duration: only what the loop did and how it summarised it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tools.engines import Model, compile_models, time_models
from tools.harness import Summary, Variant, alternate, markdown_table, quantile

INF = float("inf")  # a noise threshold no run exceeds: every round is clean (a call of microseconds can lose more
# than its own duration to one scheduler tick)


def test_rounds_rotate_and_warm_up_untimed() -> None:
    calls: list[str] = []
    variants = [Variant(name, lambda name=name: calls.append(name)) for name in "abc"]
    timing = alternate(variants, 3, warmup=2, max_lost_share=INF)
    assert len(timing.rounds) == 3 and timing.clean_count == 3 and not timing.contended
    assert calls[:6] == list("abcbca")  # warm-up rounds 0 and 1, rotated
    assert calls[6:] == list("abcbcacab")  # timed rounds 0, 1, 2: each variant starts one round
    assert timing.report()["rounds"] == 3


def test_too_few_clean_rounds_use_all_of_them_and_say_so() -> None:
    variants = [Variant("a", lambda: sum(range(1000))), Variant("b", lambda: sum(range(2000)))]
    timing = alternate(variants, 4, warmup=0, max_lost_share=-1.0, max_rounds=6)  # no round can be clean
    assert len(timing.rounds) == 6 and timing.clean_count == 0 and timing.contended
    assert len(timing.used) == 6 and "ALL used" in timing.verdict()


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    s = Summary.of([2.0, 4.0, 30.0], baseline=[1.0, 2.0, 10.0])
    assert s.ratio == 2.0  # per round: 2, 2, 3
    assert s.ratio_of_medians == 2.0 and s.median == 4.0 and s.n == 3
    with pytest.raises(ValueError, match="one baseline sample per sample"):
        Summary.of([1.0], baseline=[1.0, 2.0])
    assert quantile([0.0, 10.0], 0.9) == pytest.approx(9.0)


def test_markdown_table_checks_its_shape() -> None:
    assert markdown_table(("a", "b"), [(1, 2)], "lr").splitlines() == ["| a | b |", "|---|---:|", "| 1 | 2 |"]
    with pytest.raises(ValueError, match="columns"):
        markdown_table(("a", "b"), [(1,)])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two one-op ONNX models over a (batch, 3, 8, 8) input: Relu (the 'plain' one) and Sigmoid."""
    folder = tmp_path_factory.mktemp("harness")
    paths = {}
    for name, op in (("plain", "Relu"), ("other", "Sigmoid")):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], name, [x], [y])
        paths[name] = folder / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), paths[name])
    return paths


@pytest.mark.parametrize(("engine", "precision"), [("openvino", "default"), ("openvino", "f32"), ("onnxruntime", "")])
def test_time_models_reports_per_call_statistics(models: dict[str, Path], engine: str, precision: str) -> None:
    x = np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    compiled = compile_models(models, engine, precision or "default")
    np.testing.assert_allclose(compiled["plain"].outputs(x)["y"], np.maximum(x, 0))
    report = time_models(compiled, x, 2, warmup=1, max_lost_share=INF, repeat_s=0.002)
    assert report["batch"] == 2 and report["rounds"] == 2 and report["rounds_run"] == 2
    plain, other = report["variants"]["plain"], report["variants"]["other"]
    assert plain["ratio"] == 1.0 and other["ratio"] > 0 and other["calls_per_run"] >= 1
    assert len(other["samples_ms"]) == 2
    assert other["median_ms"] == pytest.approx(np.median(other["samples_ms"]), rel=1e-3, abs=2e-4)
    assert plain["engine"] == engine
    if precision == "f32":
        assert plain["precision"] in ("f32", "float32")


def test_unknown_engine_or_precision_is_refused(models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="engine 'tensorrt'"):
        Model(models["plain"], "tensorrt")
    with pytest.raises(ValueError, match="precision 'int4'"):
        Model(models["plain"], "openvino", "int4")
