"""ONNX adapter: read an ONNX model into a :class:`GraphView`, emit the hook as ONNX nodes, save."""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ovxai import metadata
from ovxai.errors import OvxaiError
from ovxai.graph import GraphView, Node, Tensor
from ovxai.metadata import ModelInfo
from ovxai.target import scope_from_name

MIN_OPSET = 13  # Unsqueeze/Softmax semantics the hook relies on
_PROTOBUF_LIMIT = 2**31 - 1
_SKELETON_MAX_ELEMENTS = 64  # larger initializers are replaced by typed inputs for shape inference
PREFIX = "ovxai/"


def load(path: Path) -> onnx.ModelProto:
    """Load and validate an ONNX model (with its external data), or raise a one-line error."""
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise OvxaiError(
            f"'{path}' is not a readable ONNX model ({type(exc).__name__})",
            "check that the file is complete and really an .onnx file",
        ) from None
    if not model.graph.node or not model.graph.output or not model.opset_import:
        raise OvxaiError(f"'{path}' is not an ONNX model (no graph found)", "pass an .onnx or .xml model file")
    try:
        onnx.load_external_data_for_model(model, os.fspath(path.parent))
    except Exception as exc:  # OSError, ValidationError (missing or unsafe location), ...
        raise OvxaiError(
            f"the external weights of '{path}' could not be read ({str(exc).splitlines()[0]})",
            "keep the model's .data file beside the .onnx file",
        ) from None
    try:
        onnx.checker.check_model(model if model.ByteSize() < _PROTOBUF_LIMIT else os.fspath(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid graph"
        raise OvxaiError(f"'{path}' is not a valid ONNX model: {first}", "re-export the model") from None
    return _upgraded(model, path)


def _upgraded(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    version = opset(model)
    if version >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise OvxaiError(
            f"'{path}' uses ONNX opset {version} and could not be upgraded to {MIN_OPSET} ({type(exc).__name__})",
            f"re-export the model with opset >= {MIN_OPSET}",
        ) from None


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def set_input_shape(model: onnx.ModelProto, shape: Sequence[int | str]) -> None:
    """Pin the image input's dimensions (ints) or make them dynamic (names) for every later step."""
    image = image_input(model)
    dims = image.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise OvxaiError(
            f"--input-shape has {len(shape)} dimensions but input '{image.name}' has {len(dims)}",
            "give one value per dimension, e.g. ?,3,224,224",
        )
    batch_name = dims[0].dim_param
    for i, (dim, value) in enumerate(zip(dims, shape, strict=True)):
        if i == 0 and isinstance(value, str):
            continue  # a dynamic batch is make_batch_dynamic's job: it also fixes baked batch sizes
        if i == 0 and batch_name:  # outputs declared with the same batch name get the number too
            for out in model.graph.output:
                out_dims = out.type.tensor_type.shape.dim
                if out_dims and out_dims[0].dim_param == batch_name:
                    out_dims[0].Clear()
                    out_dims[0].dim_value = value
        dim.Clear()
        if isinstance(value, int):
            dim.dim_value = value
        else:
            dim.dim_param = value
    del model.graph.value_info[:]


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {i.name for i in model.graph.initializer}
    feeds = [i for i in model.graph.input if i.name not in initializers]
    images = [i for i in feeds if len(i.type.tensor_type.shape.dim) == 4] or feeds
    if len(images) != 1:
        names = ", ".join(i.name for i in feeds)
        raise OvxaiError(f"expected one image input, found {len(feeds)} inputs ({names})", "export a classifier")
    return images[0]


# -- reading ----------------------------------------------------------------------------------------


def view(model: onnx.ModelProto) -> GraphView:
    """The format-neutral view, with shapes from ONNX shape inference on a weightless skeleton."""
    inferred = _infer_shapes(model)
    tensors: dict[str, Tensor] = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensors[info.name] = _tensor(info)
    for init in model.graph.initializer:
        tensors[init.name] = Tensor(init.name, tuple(init.dims), _np_dtype(init.data_type))
    constants = {i.name for i in model.graph.initializer}
    nodes = []
    for i, proto in enumerate(model.graph.node):
        name = proto.name or f"{proto.op_type}_{i}"
        if proto.op_type == "Constant":
            constants.update(proto.output)
        nodes.append(
            Node(
                name,
                proto.op_type,
                tuple(proto.input),
                tuple(proto.output),
                _scope(proto),
                _attrs(proto, tensors, model),
                proto,
            )
        )
    feeds = [i.name for i in model.graph.input if i.name not in constants]
    return GraphView(nodes, tensors, feeds, [o.name for o in model.graph.output], constants)


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    # Weights only matter to shape inference through their shapes, and dropping them keeps the
    # skeleton far below protobuf's 2 GB limit; small ones stay (Reshape targets, axes, ...).
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    declared = {i.name for i in graph.input}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= _SKELETON_MAX_ELEMENTS:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    try:
        return onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise OvxaiError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}", "check the model") from None


def _tensor(info: onnx.ValueInfoProto) -> Tensor:
    ttype = info.type.tensor_type
    shape = None
    if ttype.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim)
    return Tensor(info.name, shape, _np_dtype(ttype.elem_type) if ttype.elem_type else None)


def _np_dtype(elem_type: int) -> str | None:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return None


def _scope(node: onnx.NodeProto) -> str:
    """The PyTorch module path of a node, from either torch exporter's naming."""
    for prop in node.metadata_props:  # dynamo exporter: ['', 'layer4', 'layer4.1', ..., 'op_name']
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value)[:-1] if s]
            except (ValueError, SyntaxError):
                return ""
            return scopes[-1] if scopes else ""
    return scope_from_name(node.name)


def _attrs(node: onnx.NodeProto, tensors: dict[str, Tensor], model: onnx.ModelProto) -> dict[str, object]:
    attrs: dict[str, object] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        attrs["has_subgraph"] = True
    if node.op_type == "ReduceMean":
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = _constant_value(model, node.input[1])
        rank = tensors.get(node.input[0], Tensor("", None, None)).rank
        if axes is not None and rank:
            attrs["reduce_axes"] = sorted(int(a) % rank for a in axes)
    keepdims = _global_average_pool(node, attrs, tensors)
    if keepdims is not None:
        attrs["global_pool_keepdims"] = keepdims
    return attrs


def _global_average_pool(node: onnx.NodeProto, attrs: dict[str, object], tensors: dict[str, Tensor]) -> bool | None:
    """keepdims if the node averages a 4-D tensor over exactly H and W, else None."""
    shape = tensors.get(node.input[0], Tensor("", None, None)).shape if node.input else None
    if shape is None or len(shape) != 4:
        return None
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type == "ReduceMean":
        return bool(attrs.get("keepdims", 1)) if attrs.get("reduce_axes") == [2, 3] else None
    if node.op_type == "AveragePool":
        kernel = list(attrs.get("kernel_shape", []))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if kernel == list(shape[2:]) and not any(pads) and auto_pad in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            return True
    return None


def _constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].name == "value" else None
    return None


# -- writing ----------------------------------------------------------------------------------------


class OnnxOps:
    """:class:`ovxai.hook.Ops` for ONNX: each call appends a node and returns its output's name."""

    def __init__(self, model: onnx.ModelProto, graph: GraphView) -> None:
        self.model = model
        self.graph = graph
        self.opset = opset(model)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.outputs: list[str] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{PREFIX}{hint}_{self._count}"

    def _node(self, op: str, inputs: Sequence[str], **attrs: object) -> str:
        out = self._name(op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def _const(self, array: np.ndarray) -> str:
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def tensor(self, name: str) -> str:
        return name

    def dtype(self, name: str) -> str:
        dtype = self.graph.tensor(name).dtype
        if dtype is None:
            raise OvxaiError(f"the element type of '{name}' is unknown", "give the input shape with --input-shape")
        return dtype

    def i64(self, values: Sequence[int]) -> str:
        return self._const(np.array(values, dtype=np.int64))

    def f32(self, value: float) -> str:
        return self._const(np.array(value, dtype=np.float32))

    def shape(self, x: str) -> str:
        return self._node("Shape", [x])

    def slice(self, x: str, start: int, end: int) -> str:
        return self._node("Slice", [x, self.i64([start]), self.i64([end])])

    def concat(self, xs: Sequence[str]) -> str:
        return self._node("Concat", list(xs), axis=0)

    def binary(self, op: str, a: str, b: str) -> str:
        return self._node(op, [a, b])

    def unary(self, op: str, x: str) -> str:
        return self._node(op, [x])

    def cast(self, x: str, dtype: str) -> str:
        return self._node("Cast", [x], to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    def arange(self, n: str) -> str:
        scalar = self.reshape(n, self.i64([]))
        return self._node("Range", [self._const(np.array(0, np.int64)), scalar, self._const(np.array(1, np.int64))])

    def reshape(self, x: str, shape: str) -> str:
        return self._node("Reshape", [x, shape])

    def unsqueeze(self, x: str, axis: int) -> str:
        return self._node("Unsqueeze", [x, self.i64([axis])])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self._node("Transpose", [x], perm=list(perm))

    def matmul(self, a: str, b: str) -> str:
        return self._node("MatMul", [a, b])

    def expand(self, x: str, shape: str) -> str:
        return self._node("Expand", [x, shape])

    def where(self, cond: str, a: str, b: str) -> str:
        return self._node("Where", [cond, a, b])

    def softmax(self, x: str, axis: int) -> str:
        return self._node("Softmax", [x], axis=axis)

    def reduce(self, op: str, x: str, axis: int) -> str:
        if self.opset >= 18:
            return self._node(op, [x, self.i64([axis])], keepdims=1)
        return self._node(op, [x], axes=[axis], keepdims=1)

    def copy_node(self, node: Node, inputs: Sequence[str | None]) -> list[str]:
        proto = onnx.NodeProto()
        proto.CopyFrom(node.handle)
        proto.name = f"{PREFIX}tail/{node.name}"
        del proto.input[:]
        proto.input.extend(i or "" for i in inputs)
        outputs = [f"{PREFIX}tail/{o}" if o else "" for o in proto.output]
        del proto.output[:]
        proto.output.extend(outputs)
        self.nodes.append(proto)
        return outputs

    def output(self, x: str, name: str) -> None:
        self.nodes.append(helper.make_node("Identity", [x], [name], name=f"{PREFIX}{name}"))
        self.outputs.append(name)

    def apply(self, info: ModelInfo) -> onnx.ModelProto:
        """The model (edited in place) with the emitted nodes and the new graph outputs, typed by inference."""
        patched = self.model
        patched.graph.node.extend(self.nodes)
        patched.graph.initializer.extend(self.initializers)
        inferred = view(patched).tensors
        for name in self.outputs:
            t = inferred[name]
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype or "float32"))
            patched.graph.output.append(helper.make_tensor_value_info(name, elem, list(t.shape or [])))
        entries = {f"{metadata.SECTION}.{k}": v for k, v in info.model_api_entries().items()}
        entries |= {f"{metadata.OVXAI_SECTION}.{k}": v for k, v in info.ovxai_entries().items()}
        onnx.helper.set_model_props(patched, {p.key: p.value for p in patched.metadata_props} | entries)
        return patched


# -- batch ------------------------------------------------------------------------------------------


def make_batch_dynamic(model: onnx.ModelProto) -> None:
    """Turn a static batch dimension (exported with a fixed example batch) into a named one.

    Exporters bake the example's batch into Reshape targets (``x.view(1, -1)``); those whose data
    and result both carry the batch first get 0 there ("copy from the input") instead.
    """
    image = image_input(model)
    dim0 = image.type.tensor_type.shape.dim[0]
    if not dim0.HasField("dim_value"):
        return
    batch = dim0.dim_value
    shapes = view(model).tensors
    constants = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        data, result = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not (data and result and data.shape and result.shape and data.shape[0] == batch == result.shape[0]):
            continue
        target = _constant_value(model, node.input[1])
        if target is None or target.ndim != 1 or not len(target) or int(target[0]) != batch:
            continue
        allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if allow_zero and -1 in target:
            raise OvxaiError(
                f"the batch size is fixed to {batch} in node '{node.name}'",
                "re-export the model with a dynamic batch dimension",
            )
        fixed = target.copy()
        fixed[0] = -1 if allow_zero else 0
        name = f"{PREFIX}batch/{node.input[1]}"
        if name not in constants:
            constants[name] = numpy_helper.from_array(fixed.astype(np.int64), name)
            model.graph.initializer.append(constants[name])
        node.input[1] = name
    dim0.Clear()
    dim0.dim_param = "batch"
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    inferred = view(model)
    for out in inferred.outputs:
        shape = inferred.tensor(out).shape
        if shape and shape[0] == batch:
            raise OvxaiError(f"output '{out}' keeps the fixed batch {batch}", "re-export with a dynamic batch")


def input_dims(model: onnx.ModelProto) -> list[int | str]:
    dims = image_input(model).type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"dim{i}") for i, d in enumerate(dims)]
