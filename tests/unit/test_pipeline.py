"""The export pipeline's own checks, on hand-built models (no torch): an input whose channels are unknown asks for
the input shape, and the prediction check is bit for bit but for the linear shortcut's reordered sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from graphs import ov_const, random_weights

from ovxai.errors import OvxaiError
from ovxai.exporter.pipeline import load_model, prediction_shift


def test_unknown_channels_ask_for_the_input_shape(tmp_path: Path) -> None:
    x = ops.parameter(ov.PartialShape.dynamic(4), np.float32, name="x")
    relu = ops.relu(ops.convolution(x, ops.constant(random_weights(4, 3, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]))
    pooled = ops.reduce_mean(relu, ov_const([2, 3]), keep_dims=False)
    model = ov.Model([ops.result(ops.matmul(pooled, ops.constant(random_weights(4, 5)), False, False))], [x])
    ov.save_model(model, str(tmp_path / "any.xml"))
    with pytest.raises(OvxaiError, match=r"is \[\?,\?,\?,\?\]: its channels and size are unknown.*input_shape=\?,3"):
        load_model(tmp_path / "any.xml")
    assert load_model(tmp_path / "any.xml", ["batch", 3, 16, 16]).graph.input_dims() == [None, 3, 16, 16]


def test_prediction_check_is_bit_for_bit_but_past_the_linear_shortcut() -> None:
    expected = np.array([[1.0, -2.0, 4.0]], np.float32)
    assert prediction_shift(expected.copy(), expected, None) is None
    nudged = expected + np.float32(2.0**-21)
    assert prediction_shift(nudged, expected, None) == pytest.approx(2.0**-21)
    assert prediction_shift(nudged, expected, 23) is None  # the reordered sums: within 2^-19 of the largest
    assert prediction_shift(expected + np.float32(1e-3), expected, 23) is not None
    assert prediction_shift(expected + np.float32(1e-3), expected, 7) is None  # bfloat16: 2^-3 of the largest
