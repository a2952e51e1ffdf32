"""The hook's vocabulary (:class:`ovxai.graph.ops.Ops`) means the same through every builder: eager numpy, ONNX
(run by ONNX Runtime: ONNX's reference implementation slices a grouped ConvTranspose's weight by output channels)
and OpenVINO (compiled on CPU in f32)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import openvino.opset13 as opset
from onnx import helper, numpy_helper

from ovxai.formats.onnx import ONNX, OnnxBuilder
from ovxai.formats.openvino import OPENVINO, OvBuilder
from ovxai.graph.numpy_ops import NumpyBuilder
from ovxai.graph.ops import END, Ops
from ovxai.graph.view import Sliding

X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)


def _program(ops: Ops[Any]) -> dict[str, Any]:
    """Every operation of the vocabulary, on x (2, 3, 4) and the stored weight w (4, 6)."""
    x = ops.tensor("x")
    shape = ops.shape(x)
    n = ops.binary("Mul", ops.slice(shape, 1, 2), ops.slice(shape, 2, END))  # [12]
    flat = ops.reshape(x, ops.concat([ops.slice(shape, 0, 1), n]))  # (2, 12)
    positions = ops.cast(ops.arange(n), "float32")
    mixed = ops.binary("Sub", ops.binary("Div", flat, ops.f32(3.0)), ops.binary("Add", positions, ops.f32(0.5)))
    rounded = ops.unary("Round", ops.binary("Mul", ops.unary("Abs", mixed), ops.f32(2.0)))
    gated = ops.where(ops.binary("Greater", mixed, ops.f32(0.0)), ops.unary("Sigmoid", mixed), ops.unary("Relu", mixed))
    equal = ops.cast(ops.binary("Equal", ops.unary("Floor", rounded), rounded), "float32")
    product = ops.matmul(x, ops.tensor("w"))  # (2, 3, 6)
    relaid = ops.matmul(product, ops.relaid("w", [4, 6], [1, 0]))  # w stored re-laid (6, 4): (2, 3, 4)
    top = ops.topk(ops.transpose(product, [0, 2, 1]), 2)  # (2, 6, 2)
    spread = ops.expand(ops.unsqueeze(ops.i64([0, 2]), 0), ops.i64([3, 2]))
    image = ops.reshape(x, ops.i64([2, 6, 1, 2]))
    kernel = ops.f32(np.random.default_rng(2).standard_normal((6, 2, 3, 2)))  # (C_in, C_out / groups, kh, kw)
    strided = Sliding((3, 2), (2, 3), (1, 0), (1, 2), (0, 1))
    last = ops.binary("Sub", ops.slice(shape, 2, 3), ops.i64([1]))  # sizes known only at run time
    halves = ops.split(x, ops.concat([last, ops.i64([1])]), 2, 2) + ops.split(x, ops.i64([1, 3]), 2, 2)
    positive = ops.binary("Add", ops.unary("Abs", x), ops.f32(0.1))
    return {
        "smooth": ops.binary(
            "Add", ops.unary("Erf", x), ops.binary("Mul", ops.unary("Tanh", x), ops.unary("Exp", ops.unary("Neg", x)))
        ),
        "powers": ops.binary("Pow", positive, ops.unary("Sqrt", positive)),
        "means": ops.reduce_axes("ReduceMean", x, [0, 2]),
        "mean": ops.reduce("ReduceMean", x, 1),
        "axes_sums": ops.reduce_axes("ReduceSum", x, [1, 2]),
        "crop": ops.crop(x, ops.i64([1, 0]), ops.slice(shape, 1, 3), [2, 1]),
        "pad": ops.pad(x, [0, 1, 2], [1, 0, 1]),
        "parts": ops.concat([halves[1], halves[0], halves[3], halves[2]], axis=2),
        "scatter": ops.scatter_add(  # an index given twice or three times gets every update
            ops.binary("Mul", flat, ops.f32(0.0)),
            ops.i64(np.array([[0, 3, 3, 11], [5, 5, 5, 0]])),
            ops.f32(np.arange(8, dtype=np.float32).reshape(2, 4)),
            1,
        ),
        "transposed": ops.conv_transpose(image, kernel, 1, strided, [1, 0]),
        "convolved": ops.conv(
            image,
            ops.f32(np.random.default_rng(3).standard_normal((4, 3, 1, 2))),
            2,
            Sliding((1, 2), (1, 2), (0, 1), (1, 1), (1, 2)),
        ),
        "grouped": ops.conv_transpose(image, kernel, 2, Sliding((3, 2), (1, 1), (1, 1), (1, 1), (1, 0)), [0, 0]),
        "flat": flat,
        "mixed": mixed,
        "rounded": rounded,
        "gated": gated,
        "equal": equal,
        "softmax": ops.softmax(product, 2),
        "sums": ops.reduce("ReduceSum", product, 1),
        "spans": ops.binary("Sub", ops.reduce("ReduceMax", product, 2), ops.reduce("ReduceMin", product, 2)),
        "relaid": relaid,
        "top": ops.cast(top, "float32"),
        "gather": ops.gather(product, ops.i64([5, 0]), 2),
        "elements": ops.gather_elements(x, ops.expand(ops.unsqueeze(spread, 0), ops.i64([2, 3, 2])), 2),
        "bytes": ops.cast(ops.binary("Mul", gated, ops.f32(255.0)), "uint8"),
    }


def _onnx_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "ops",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(X.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(X.shape))],
        [numpy_helper.from_array(W, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _through_numpy() -> dict[str, np.ndarray]:
    model = _onnx_model()
    builder = NumpyBuilder(ONNX.view(model), {"x": X, "w": W}, lambda node, inputs, unpadded: [])
    return {name: np.asarray(value) for name, value in _program(Ops(builder)).items()}


def _through_onnx() -> dict[str, np.ndarray]:
    model = _onnx_model()
    builder = OnnxBuilder(model, ONNX.view(model))
    ops = Ops(builder)
    for name, value in _program(ops).items():
        ops.output(value, name, ())
    patched = builder.finish()
    for declared in patched.graph.output:  # the program's outputs have every rank: declare none
        declared.type.tensor_type.ClearField("shape")
    names = [o.name for o in patched.graph.output][1:]
    session = ort.InferenceSession(patched.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"x": X}), strict=True))


def _through_openvino() -> dict[str, np.ndarray]:
    x = opset.parameter(list(X.shape), np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    w = opset.constant(W)
    w.output(0).get_tensor().set_names({"w"})
    model = ov.Model([opset.result(opset.add(x, opset.constant(np.float32(0))))], [x])
    model.add_results([opset.result(opset.matmul(x, w, False, False))])
    builder = OvBuilder(model)
    ops = Ops(builder)
    names = []
    for name, value in _program(ops).items():
        ops.output(value, name, ())
        names.append(name)
    compiled = ov.Core().compile_model(builder.finish(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(X)
    return {name: np.asarray(result[compiled.output(name)]) for name in names}


def test_every_builder_computes_the_same() -> None:
    expected = _through_numpy()
    for got in (_through_onnx(), _through_openvino()):
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert got[name].dtype == value.dtype, name
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_numpy_ops_follow_onnx_where_numpy_differs() -> None:
    ops = Ops(NumpyBuilder(ONNX.view(_onnx_model()), {}, lambda node, inputs, unpadded: []))
    np.testing.assert_array_equal(ops.unary("Round", ops.f32(np.array([0.5, 1.5, 2.5, -0.5]))), [0, 2, 2, -0])
    np.testing.assert_array_equal(ops.binary("Div", ops.i64([-7, 7]), ops.i64([2, 2])), [-3, 3])  # truncates
    ties = ops.f32(np.array([[1.0, 3.0, 3.0, 0.0]]))
    np.testing.assert_array_equal(ops.topk(ties, 2), [[1, 2]])  # equal values: the lower index first
    assert OPENVINO.name == "OpenVINO IR"


def test_maxpool_indices_are_the_first_maximum_in_every_builder(tmp_path: Any) -> None:
    """The argmax a max pool's backward routes to: the ONNX builder's (the pool's own Indices output, added), the
    OpenVINO builder's (its opset 8 pool's indices) and numpy's, on a map full of ties, with padding and ceil_mode."""
    from ovxai.graph.numpy_ops import maxpool_indices

    x = np.random.default_rng(4).integers(0, 3, (2, 3, 7, 6)).astype(np.float32)  # values 0, 1, 2: many ties
    window = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", **window)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "pool.onnx"
    onnx.save(model, str(path))
    view = ONNX.view(model)
    assert view.nodes[0].pool is not None
    expected = maxpool_indices(x, view.nodes[0].pool)
    builder = OnnxBuilder(model, view)
    Ops(builder).output(Ops(builder).indices(view.nodes[0]), "where", ())
    patched = builder.finish()
    patched.graph.output[-1].type.tensor_type.ClearField("shape")
    session = ort.InferenceSession(patched.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(["where"], {"x": x})[0], expected)
    ov_model = OPENVINO.convert(path)
    ov_builder = OvBuilder(ov_model)
    ov_ops = Ops(ov_builder)
    pool = next(n for n in OPENVINO.view(ov_model).nodes if n.op == "MaxPool")
    ov_ops.output(ov_ops.indices(pool), "where", ())
    ov_ops.output(ov_ops.indices(pool, ov_ops.tensor(pool.inputs[0])), "twin", ())
    compiled = ov.Core().compile_model(ov_builder.finish(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(x)
    np.testing.assert_array_equal(result[compiled.output("where")], expected)
    np.testing.assert_array_equal(result[compiled.output("twin")], expected)
