"""OpenVINO adapter: read IR into a :class:`GraphView`, emit the hook as opset nodes, write IR.

OpenVINO's Python API cannot clone a single node, so the tail is copied by cloning the whole
model once and rewiring the clone's tail nodes onto the hook (their weights are rewired to the
original constants, so nothing is stored twice; the rest of the clone is unreachable and dropped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovxai import metadata
from ovxai.errors import OvxaiError, engine_reason
from ovxai.graph import GraphView, Node, Tensor
from ovxai.metadata import ModelInfo
from ovxai.target import scope_from_name

try:
    import openvino as ov
    import openvino.opset13 as opset
    from openvino import opset3, opset4, opset8
except ImportError:  # pragma: no cover - openvino is a dependency; the message is for broken installs
    ov = None

PREFIX = "ovxai/"
_SKIPPED = ("Parameter", "Constant", "Result")
_OV_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "uint8": "u8", "int64": "i64", "int32": "i32"}


def _require_openvino() -> None:
    if ov is None:
        raise OvxaiError("OpenVINO IR needs the 'openvino' package", "pip install openvino")


def load(path: Path) -> Any:
    """Read an IR (.xml + .bin) or raise a one-line error."""
    _require_openvino()
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise OvxaiError(f"the weights file '{weights}' of '{path}' is missing", "keep the .bin beside the .xml")
    try:
        return ov.Core().read_model(os.fspath(path))
    except RuntimeError as exc:
        reason = engine_reason(exc)
        fix = "the .bin does not belong to this .xml; copy both from the same export" if "weights" in reason else None
        raise OvxaiError(f"'{path}' is not a readable OpenVINO IR: {reason}", fix or "re-export the model") from None


def set_input_shape(model: Any, shape: Sequence[int | str]) -> None:
    """Pin (ints) or free (names) the image input's dimensions, like the ONNX adapter."""
    image = _image_input(model)
    current = image.get_partial_shape()
    if len(shape) != current.rank.get_length():
        raise OvxaiError(f"--input-shape has {len(shape)} dimensions, the input has {current.rank}", "e.g. ?,3,224,224")
    dims = [ov.Dimension(v) if isinstance(v, int) else ov.Dimension() for v in shape]
    _reshape(model, image, ov.PartialShape(dims))


def make_batch_dynamic(model: Any) -> None:
    """Turn a static batch dimension into a dynamic one, freeing batch sizes baked into Reshapes.

    A Reshape whose constant target starts with the batch and whose data and result both start
    with it gets 0 there with ``special_zero`` ("copy from the input"), as in the ONNX adapter.
    """
    image = _image_input(model)
    shape = image.get_partial_shape()
    if shape[0].is_dynamic:
        return
    batch = shape[0].get_length()
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Reshape":
            continue
        target = _constant(op.input_value(1))
        data, result = op.get_input_partial_shape(0), op.get_output_partial_shape(0)
        if target is None or target.ndim != 1 or not target.size or int(target[0]) != batch:
            continue
        if data.rank.is_dynamic or result.rank.is_dynamic or data.rank.get_length() == 0:
            continue
        if data[0].is_static and data[0].get_length() == batch == result[0].get_length():
            fixed = target.astype(np.int64).copy()
            fixed[0] = 0
            freed = opset.reshape(op.input_value(0), opset.constant(fixed), special_zero=True)
            freed.set_friendly_name(op.get_friendly_name())
            op.output(0).replace(freed.output(0))
    _reshape(model, image, ov.PartialShape([ov.Dimension(), *list(shape)[1:]]))
    for out in model.outputs:
        dims = out.get_partial_shape()
        if dims.rank.is_static and dims.rank.get_length() and dims[0].is_static:
            raise OvxaiError(
                f"output '{out.get_any_name()}' keeps the fixed batch {dims[0].get_length()}",
                "re-export the model with a dynamic batch",
            )


def make_static(model: Any, batch: int) -> None:
    """Give every shape a fixed value (the NPU needs that), batch included."""
    image = _image_input(model)
    shape = image.get_partial_shape()
    if any(d.is_dynamic for d in list(shape)[1:]):
        raise OvxaiError(
            f"input '{image.get_any_name()}' has dynamic dimensions {shape}", "pin them with --input-shape"
        )
    _reshape(model, image, ov.PartialShape([batch, *list(shape)[1:]]))
    if model.is_dynamic():
        raise OvxaiError("some shapes stay dynamic after fixing the input", "use a model with static spatial shapes")


def input_dims(model: Any) -> list[int | str]:
    shape = _image_input(model).get_partial_shape()
    return [d.get_length() if d.is_static else f"dim{i}" for i, d in enumerate(shape)]


def _reshape(model: Any, image: Any, shape: Any) -> None:
    try:
        model.reshape({image: shape})
    except RuntimeError as exc:
        raise OvxaiError(
            f"the model cannot take input shape {shape}: {engine_reason(exc)}",
            "re-export it with a dynamic batch (and the wanted size)",
        ) from None


def _image_input(model: Any) -> Any:
    images = [i for i in model.inputs if i.get_partial_shape().rank.get_length() == 4] or list(model.inputs)
    if len(images) != 1:
        raise OvxaiError(f"expected one image input, found {len(model.inputs)}", "export a classifier")
    return images[0]


# -- reading ----------------------------------------------------------------------------------------


def tensor_id(output: Any) -> str:
    names = output.get_names()
    return min(names) if names else f"{output.get_node().get_name()}:{output.get_index()}"


def view(model: Any) -> GraphView:
    """The format-neutral view of an OpenVINO model (op types named as in ONNX where they agree)."""
    ops = model.get_ordered_ops()
    friendly = [op.get_friendly_name() for op in ops]
    tensors: dict[str, Tensor] = {}
    nodes: list[Node] = []
    inputs: list[str] = []
    constants: set[str] = set()
    for op, name in zip(ops, friendly, strict=True):
        kind = op.get_type_name()
        for out in op.outputs():
            tensors[tensor_id(out)] = _tensor(out)
        if kind == "Parameter":
            inputs.append(tensor_id(op.output(0)))
        elif kind == "Constant":
            constants.add(tensor_id(op.output(0)))
        if kind in _SKIPPED:
            continue
        unique = name if friendly.count(name) == 1 else f"{name}#{op.get_name()}"
        nodes.append(
            Node(
                unique,
                "Shape" if kind == "ShapeOf" else kind,
                tuple(tensor_id(i.get_source_output()) for i in op.inputs()),
                tuple(tensor_id(o) for o in op.outputs()),
                scope_from_name(name),
                _attrs(op),
                op,
            )
        )
    outputs = [tensor_id(r.input_value(0)) for r in model.get_results()]
    aliases = {n: tensor_id(o) for op in ops for o in op.outputs() for n in o.get_names()}
    return GraphView(nodes, tensors, inputs, outputs, constants, aliases)


def _tensor(output: Any) -> Tensor:
    shape = output.get_partial_shape()
    dims = None if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else None for d in shape)
    try:
        dtype = np.dtype(output.get_element_type().to_dtype()).name
    except (RuntimeError, TypeError):
        dtype = None
    return Tensor(tensor_id(output), dims, dtype)


def _attrs(op: Any) -> dict[str, object]:
    kind = op.get_type_name()
    attrs: dict[str, object] = {}
    if kind in ("If", "Loop", "TensorIterator"):
        attrs["has_subgraph"] = True
    if kind == "MatMul":
        attrs.update(op.get_attributes())  # transpose_a / transpose_b, for the cost estimate
    data = op.input_value(0).get_partial_shape() if op.get_input_size() else None
    if data is None or data.rank.is_dynamic or data.rank.get_length() != 4:
        return attrs
    if kind == "Transpose":
        perm = _constant(op.input_value(1))
        if perm is not None:
            attrs["perm"] = [int(p) for p in perm]
    if kind == "ReduceMean":
        axes = _constant(op.input_value(1))
        if axes is not None:
            attrs["reduce_axes"] = sorted(int(a) % 4 for a in np.atleast_1d(axes))
        if attrs.get("reduce_axes") == [2, 3]:
            attrs["global_pool_keepdims"] = bool(op.get_attributes().get("keep_dims", False))
    elif kind == "AvgPool":
        a = op.get_attributes()
        spatial = [d.get_length() if d.is_static else None for d in list(data)[2:]]
        if list(a.get("kernel", [])) == spatial and not any(a.get("pads_begin", [])) and not any(a.get("pads_end", [])):
            attrs["global_pool_keepdims"] = True
    return attrs


def _constant(output: Any) -> np.ndarray | None:
    node = output.get_node()
    return node.get_data() if node.get_type_name() == "Constant" else None


# -- writing ----------------------------------------------------------------------------------------


class OvOps:
    """:class:`ovxai.hook.Ops` for OpenVINO: tensors are ``ov.Output`` handles."""

    def __init__(self, model: Any, graph: GraphView) -> None:
        self.model = model
        self.by_id = {tensor_id(o): o for op in model.get_ordered_ops() for o in op.outputs()}
        self.results: list[Any] = []
        self._count = 0
        self._twins: dict[str, Any] | None = None
        self.graph = graph

    def _named(self, node: Any) -> Any:
        self._count += 1
        node.set_friendly_name(f"{PREFIX}{node.get_type_name()}_{self._count}")
        return node.output(0)

    def _twin(self, node: Node) -> Any:
        if self._twins is None:  # clone once, lazily: only the tail's twins are ever used
            originals = self.model.get_ordered_ops()
            clones = self.model.clone().get_ordered_ops()
            assert [o.get_type_name() for o in originals] == [c.get_type_name() for c in clones]
            self._twins = {id(o): c for o, c in zip(originals, clones, strict=True)}
            self._keep_alive = clones  # the cloned model's nodes must outlive the clone object
        return self._twins[id(node.handle)]

    def tensor(self, name: str) -> Any:
        return self.by_id[name]

    def dtype(self, name: str) -> str:
        return np.dtype(self.by_id[name].get_element_type().to_dtype()).name

    def i64(self, values: Sequence[int]) -> Any:
        return self._named(opset.constant(np.array(values, dtype=np.int64)))

    def f32(self, value: float) -> Any:
        return self._named(opset.constant(np.array(value, dtype=np.float32)))

    def shape(self, x: Any) -> Any:
        return self._named(opset3.shape_of(x, "i64"))

    def slice(self, x: Any, start: int, end: int) -> Any:
        return self._named(opset8.slice(x, self.i64([start]), self.i64([end]), self.i64([1])))

    def concat(self, xs: Sequence[Any]) -> Any:
        return self._named(opset.concat(list(xs), 0))

    def binary(self, op: str, a: Any, b: Any) -> Any:
        make = {"Add": opset.add, "Sub": opset.subtract, "Mul": opset.multiply, "Div": opset.divide}
        return self._named(opset.greater(a, b) if op == "Greater" else make[op](a, b))

    def unary(self, op: str, x: Any) -> Any:
        if op == "Round":
            return self._named(opset.round(x, "half_to_even"))  # ONNX Round's rule
        return self._named(
            {"Abs": opset.abs, "Floor": opset.floor, "Relu": opset.relu, "Sigmoid": opset.sigmoid}[op](x)
        )

    def cast(self, x: Any, dtype: str) -> Any:
        return self._named(opset.convert(x, _OV_TYPES[dtype]))

    def arange(self, n: Any) -> Any:
        stop = self.reshape(n, self.i64([]))
        return self._named(opset4.range(self._scalar(0), stop, self._scalar(1), "i64"))

    def _scalar(self, value: int) -> Any:
        return self._named(opset.constant(np.array(value, dtype=np.int64)))

    def reshape(self, x: Any, shape: Any) -> Any:
        return self._named(opset.reshape(x, shape, special_zero=False))

    def unsqueeze(self, x: Any, axis: int) -> Any:
        return self._named(opset.unsqueeze(x, self.i64([axis])))

    def transpose(self, x: Any, perm: Sequence[int]) -> Any:
        return self._named(opset.transpose(x, self.i64(list(perm))))

    def matmul(self, a: Any, b: Any) -> Any:
        return self._named(opset.matmul(a, b, False, False))

    def expand(self, x: Any, shape: Any) -> Any:
        return self._named(opset3.broadcast(x, shape, broadcast_spec="BIDIRECTIONAL"))  # ONNX Expand

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self._named(opset.select(cond, a, b))

    def softmax(self, x: Any, axis: int) -> Any:
        return self._named(opset8.softmax(x, axis))

    def reduce(self, op: str, x: Any, axis: int) -> Any:
        make = opset.reduce_min if op == "ReduceMin" else opset.reduce_max
        return self._named(make(x, self.i64([axis]), keep_dims=True))

    def copy_node(self, node: Node, inputs: Sequence[Any]) -> list[Any]:
        twin = self._twin(node)
        for port, source in enumerate(inputs):
            twin.input(port).replace_source_output(source)
        twin.set_friendly_name(f"{PREFIX}tail/{node.name}")
        for out in twin.outputs():  # the clone's tensors carry the originals' names: rename them
            out.get_tensor().set_names({f"{PREFIX}tail/{n}" for n in out.get_names()})
        twin.validate_and_infer_types()
        return list(twin.outputs())

    def output(self, x: Any, name: str) -> None:
        x.get_tensor().set_names({name})
        result = opset.result(x)
        result.set_friendly_name(name)
        self.results.append(result)

    def apply(self) -> Any:
        self.model.add_results(self.results)
        self.model.validate_nodes_and_infer_types()
        return self.model


def convert_onnx(onnx_path: Path) -> Any:
    """The patched ONNX model as an ov.Model."""
    _require_openvino()
    try:
        return ov.convert_model(os.fspath(onnx_path))
    except Exception as exc:
        raise OvxaiError(
            f"OpenVINO could not convert the patched model: {engine_reason(exc)}", "write .onnx instead"
        ) from None


def save(model: Any, xml_path: Path, fp16: bool, info: ModelInfo) -> list[Path]:
    """Write ``xml_path`` and its .bin; weights in FP16 unless ``fp16`` is False (like OpenVINO's tools)."""
    for key, value in info.model_api_entries().items():
        model.set_rt_info(value, [metadata.SECTION, key])
    for key, value in info.ovxai_entries().items():
        model.set_rt_info(value, [metadata.OVXAI_SECTION, key])
    ov.save_model(model, os.fspath(xml_path), compress_to_fp16=fp16)
    return [xml_path, xml_path.with_suffix(".bin")]
