"""ONNX adapter: read an ONNX model into a :class:`GraphView`, emit the hook as ONNX nodes, save."""

from __future__ import annotations

import ast
import heapq
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ovxai.conventions import NODE_PREFIX
from ovxai.errors import OvxaiError, engine_reason
from ovxai.graph.batch import ReshapeFix
from ovxai.graph.numpy_ops import RunNode
from ovxai.graph.view import Dim, GraphView, Node, Pooling, Slicing, Sliding, Tensor, scope_from_name
from ovxai.metadata import Entries, ModelInfo, onnx_key, read_onnx_props

MIN_OPSET = 13  # Unsqueeze/Softmax semantics the hook relies on
_PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # bytes of weights; protobuf cannot hold 2 GB
_SMALL_CONSTANT = 64  # elements: constants up to this size are kept in the view (shapes, axes) and the skeleton
_FOLDED_MAX = 4096  # elements: the largest value the static-shape folding computes (shape arithmetic is small)
_ANY_BATCH = "ovxai_any_batch"  # the batch's name while folding: a value that depends on it is not folded
_PROBE_BATCHES = (2, 3)  # batch sizes at which shape inference resolves dimensions computed from the batch
_FOLDING_ROUNDS = 256  # static-shape folding rounds at most (one per layer whose padding is computed, at worst)
_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                         "Bernoulli", "Dropout"})  # fmt: skip


class OnnxFormat:
    """:class:`ovxai.formats.Format` for ONNX files (``onnx.ModelProto``)."""

    name = "ONNX"
    suffix = ".onnx"

    def load(self, path: Path) -> onnx.ModelProto:
        """Load and validate an ONNX model (with its external data), upgraded to :data:`MIN_OPSET`."""
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
                f"the external weights of '{path}' could not be read ({engine_reason(exc)})",
                "keep the model's .data file beside the .onnx file",
            ) from None
        try:
            onnx.checker.check_model(model if model.ByteSize() < _PROTOBUF_LIMIT else os.fspath(path))
        except onnx.checker.ValidationError as exc:
            raise OvxaiError(
                f"'{path}' is not a valid ONNX model: {engine_reason(exc)}", "re-export the model"
            ) from None
        return _upgraded(model, path)

    def view(self, model: onnx.ModelProto) -> GraphView:
        """The format-neutral view, with shapes from ONNX shape inference on a weightless skeleton."""
        inferred = _infer_shapes(model)
        tensors: dict[str, Tensor] = {}
        for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            tensors[info.name] = _tensor(info)
        _resolve_by_batch(model, tensors)
        values: dict[str, np.ndarray] = {}
        for init in model.graph.initializer:
            tensors[init.name] = Tensor(init.name, tuple(init.dims), _np_dtype(init.data_type))
            if int(np.prod(init.dims)) <= _SMALL_CONSTANT:
                values[init.name] = numpy_helper.to_array(init)
        constants = {i.name for i in model.graph.initializer}
        nodes = []
        for i, proto in enumerate(model.graph.node):
            if proto.op_type == "Constant":
                constants.update(proto.output)
                value = _constant_node_value(proto)
                if value is not None and value.size <= _SMALL_CONSTANT:
                    values[proto.output[0]] = value
            nodes.append(_node(proto, proto.name or f"{proto.op_type}_{i}", tensors, values))
        feeds = [i.name for i in model.graph.input if i.name not in constants]
        return GraphView(nodes, tensors, feeds, [o.name for o in model.graph.output], constants, values=values)

    def fold_static_shapes(self, model: onnx.ModelProto) -> None:
        """Replace every value computed from shapes that the model's fixed dimensions determine by an initializer
        of the same name (the nodes that computed it leave the graph); ONNX Runtime folds the same at load."""
        _fold(model, _ANY_BATCH)

    def set_input_shape(self, model: onnx.ModelProto, name: str, dims: Sequence[int | str]) -> None:
        image = next(i for i in model.graph.input if i.name == name)
        shape = image.type.tensor_type.shape.dim
        old_batch = _dim(shape[0])
        for dim, value in zip(shape, dims, strict=True):
            _set_dim(dim, value)
        for out in model.graph.output:  # declared output batches follow the input's
            out_dims = out.type.tensor_type.shape.dim
            if out_dims and _dim(out_dims[0]) == old_batch:
                _set_dim(out_dims[0], dims[0])
        del model.graph.value_info[:]  # inferred for the old shape

    def rewrite_reshapes(self, model: onnx.ModelProto, fixes: Sequence[ReshapeFix]) -> None:
        for fix in fixes:
            proto: onnx.NodeProto = fix.node.handle
            name = f"{NODE_PREFIX}batch/{proto.input[1]}"
            model.graph.initializer.append(numpy_helper.from_array(fix.target, name))
            proto.input[1] = name
            for attr in proto.attribute:  # 0 must mean "copy": the target holds no other 0
                if attr.name == "allowzero":
                    attr.i = 0

    def builder(self, model: onnx.ModelProto, graph: GraphView) -> OnnxBuilder:
        return OnnxBuilder(model, graph)

    def set_metadata(self, model: onnx.ModelProto, entries: Entries) -> None:
        props = {p.key: p.value for p in model.metadata_props}
        props |= {onnx_key(section, key): value for (section, key), value in entries.items()}
        helper.set_model_props(model, props)

    def metadata(self, model: onnx.ModelProto) -> ModelInfo:
        return read_onnx_props({p.key: p.value for p in model.metadata_props})

    def save(self, model: onnx.ModelProto, path: Path, fp16: bool) -> list[Path]:
        """Write the model (weights beside it past protobuf's 2 GB); ``fp16`` does not apply to ONNX."""
        weights = sum(len(i.raw_data) for i in model.graph.initializer)
        if weights < _EXTERNAL_DATA_THRESHOLD:
            onnx.save_model(model, os.fspath(path))
            files = [path]
        else:
            data = path.with_name(path.name + ".data")
            onnx.save_model(model, os.fspath(path), save_as_external_data=True, location=data.name, size_threshold=1024)
            onnx.load_external_data_for_model(model, os.fspath(path.parent))  # saving moved the weights out of it
            files = [path, data]
        try:
            onnx.checker.check_model(os.fspath(path), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise RuntimeError(f"ovxai produced an invalid ONNX model, please report: {exc}") from exc
        return files

    def convert(self, path: Path) -> onnx.ModelProto:
        raise OvxaiError(f"'{path}' cannot be converted to ONNX", "write OpenVINO IR (.xml) instead")

    precisions: tuple[str, ...] = ("default",)  # ONNX Runtime's CPU provider computes in the model's own types

    def mantissa_bits(self, precision: str) -> int:
        return 23

    def smoke_run(self, path: Path, x: np.ndarray, precision: str = "default") -> dict[str, np.ndarray]:
        """Run in ONNX Runtime (OpenVINO's ONNX reader where onnxruntime is not installed)."""
        try:
            import onnxruntime as ort
        except ImportError:
            from ovxai.formats.openvino import run_once

            return run_once(path, x, "f32")
        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))


ONNX = OnnxFormat()


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


def _dim(dim: onnx.TensorShapeProto.Dimension) -> int | str:
    return dim.dim_value if dim.HasField("dim_value") else dim.dim_param


def _set_dim(dim: onnx.TensorShapeProto.Dimension, value: int | str) -> None:
    dim.Clear()
    if isinstance(value, int):
        dim.dim_value = value
    else:
        dim.dim_param = value


# -- reading ----------------------------------------------------------------------------------------


def _infer_shapes(model: onnx.ModelProto, batch: int | str | None = None) -> onnx.ModelProto:
    """Shapes by ONNX shape inference on a weightless skeleton; ``batch``: with every input's first dimension (the
    batch) set to it, the declared inner shapes dropped (a name: no inferred value depends on the batch size)."""
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
    if batch is not None:
        weights = {init.name for init in model.graph.initializer}  # listed as inputs by older exporters
        for info in graph.input:
            dims = info.type.tensor_type.shape.dim
            if dims and info.name not in weights:
                _set_dim(dims[0], batch)
        for info in graph.output:
            info.type.tensor_type.ClearField("shape")  # declared with the fixed batch: let inference say
    else:
        graph.value_info.extend(model.graph.value_info)
    declared = {i.name for i in graph.input}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= _SMALL_CONSTANT:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    try:
        return onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise OvxaiError(f"ONNX shape inference failed: {engine_reason(exc)}", "check the model") from None


def _resolve_by_batch(model: onnx.ModelProto, tensors: dict[str, Tensor]) -> None:
    """Dimensions that shape inference leaves unknown only because they are computed from the symbolic batch (a
    flatten whose target is ``[Shape(x)[0], C, -1]``, a token expanded to ``[B, 1, 1]``: the legacy torch exporter's
    spelling), from inference at two batch sizes: a dimension equal in both is that size, one equal to each batch
    is the batch. Only where every input's other dimensions are fixed (nothing else can vary)."""
    feeds = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    shapes = [tensors[i.name].shape for i in feeds]
    if not shapes or any(s is None or not s or not all(isinstance(d, int) for d in s[1:]) for s in shapes):
        return
    symbols = {s[0] for s in shapes if s is not None and not isinstance(s[0], int)}
    unknown = [t for t in tensors.values() if t.shape is not None and not all(isinstance(d, int) or d in symbols
                                                                              for d in t.shape)]  # fmt: skip
    if len(symbols) != 1 or not unknown:
        return
    symbol = symbols.pop()
    at = {b: _probe_shapes(model, b) for b in _PROBE_BATCHES}
    first, second = _PROBE_BATCHES
    for tensor in unknown:
        one, two = at[first].get(tensor.name), at[second].get(tensor.name)
        if one is None or two is None or not (len(one) == len(two) == len(tensor.shape or ())):
            continue
        dims: list[Dim] = []
        for have, a, b in zip(tensor.shape or (), one, two, strict=True):
            if isinstance(have, int) or have == symbol:
                dims.append(have)
            elif isinstance(a, int) and a == b:
                dims.append(a)
            else:
                dims.append(symbol if (a, b) == _PROBE_BATCHES else have)
        tensors[tensor.name] = Tensor(tensor.name, tuple(dims), tensor.dtype)


def _fold(model: onnx.ModelProto, batch: int | str) -> None:
    """:meth:`OnnxFormat.fold_static_shapes` with the batch ``batch`` (a name: any batch)."""
    # Each round's constants can make more shapes known (a padding computed from the map's size gives the
    # padded map's size, whose shape the next padding reads): fold until nothing more is fixed.
    for _ in range(_FOLDING_ROUNDS):
        folded = _static_shape_values(model, batch)
        if not folded:
            return
        graph = model.graph
        kept = [n for n in graph.node if not (n.output and all(o in folded or not o for o in n.output))]
        read = {i for n in kept for i in _reads(n)} | {o.name for o in graph.output}
        del graph.node[:]
        graph.node.extend(kept)
        unread = [i for i in graph.initializer if i.name not in read]  # what only the folded nodes read
        for init in unread:
            graph.initializer.remove(init)
        graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in folded.items() if name in read)
        del graph.value_info[:]  # re-inferred from the constants


def _probe_shapes(model: onnx.ModelProto, batch: int) -> dict[str, tuple[Dim, ...] | None]:
    """Every tensor's shape on a copy of ``model`` whose batch is ``batch``, its shape arithmetic folded."""
    probe = onnx.ModelProto()  # the graph, and the initializers without their data where it is never read
    probe.ir_version = model.ir_version
    probe.opset_import.extend(model.opset_import)
    probe.functions.extend(model.functions)
    for part in ("node", "input", "output"):
        getattr(probe.graph, part).extend(getattr(model.graph, part))
    for init in model.graph.initializer:
        small = int(np.prod(init.dims)) <= _FOLDED_MAX
        probe.graph.initializer.append(init if small else _dataless(init))
    _fold(probe, batch)
    inferred = _infer_shapes(probe, batch).graph
    shapes = {i.name: _tensor(i).shape for i in [*inferred.value_info, *inferred.output]}
    return shapes | {i.name: tuple(i.dims) for i in probe.graph.initializer}


def _dataless(init: onnx.TensorProto) -> onnx.TensorProto:
    """An initializer's name, type and dimensions without its data (what shape inference reads of a weight)."""
    tensor = onnx.TensorProto()
    tensor.name, tensor.data_type = init.name, init.data_type
    tensor.dims.extend(init.dims)
    return tensor


def _static_shape_values(model: onnx.ModelProto, batch: int | str) -> dict[str, np.ndarray]:
    """Values computed from tensors' shapes that are fixed given the model's static dimensions (a Shape of a
    tensor whose read dimensions are all known, and arithmetic on such values and small constants), and integer
    arithmetic on constants, by name: each node is evaluated with ONNX's reference implementation of its
    opset's operator."""
    inferred = _infer_shapes(model, batch)
    infos = [_tensor(i) for i in [*inferred.graph.input, *inferred.graph.value_info]]
    shapes = {t.name: t.shape for t in infos}
    types = {t.name: t.dtype for t in infos}
    known: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= _FOLDED_MAX:
            known[init.name] = numpy_helper.to_array(init)
    folded: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = _constant_node_value(node)
            if value is not None and value.size <= _FOLDED_MAX:
                known[node.output[0]] = value
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type in _RANDOM_OPS:
            continue
        if node.op_type in ("Shape", "Size"):
            values = _shape_value(node, shapes.get(node.input[0]))
        elif all(not i or i in known for i in node.input) and (
            any(i in folded for i in node.input) or _integer_arithmetic(node, types)
        ):
            values = _evaluated(node, [known[i] if i else None for i in node.input], model.opset_import)
        else:
            continue
        if values is None or any(v.size > _FOLDED_MAX for v in values):
            continue
        for name, value in zip(node.output, values, strict=False):
            if name:
                known[name] = folded[name] = value
    return folded


def _integer_arithmetic(node: onnx.NodeProto, types: dict[str, str | None]) -> bool:
    """Constant arithmetic with integer results (paddings, axes, shapes an exporter left unfolded), which shape
    inference does not evaluate; a quantiser's or a weight's (float) computation is the engine's to fold."""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return False
    dtypes = [types.get(o) for o in node.output if o]
    return bool(dtypes) and all(d is not None and d.startswith(("int", "uint", "bool")) for d in dtypes)


def _shape_value(node: onnx.NodeProto, shape: tuple[Dim, ...] | None) -> list[np.ndarray] | None:
    """Shape (start/end attributes) or Size of a tensor, where the dimensions it reads are all known."""
    if shape is None:
        return None
    if node.op_type == "Size":
        return [np.array(math.prod(shape), np.int64)] if all(isinstance(d, int) for d in shape) else None  # type: ignore[arg-type]
    attrs = {a.name: a.i for a in node.attribute}
    dims = shape[attrs.get("start", 0) : attrs.get("end", len(shape))]
    return [np.array(dims, np.int64)] if all(isinstance(d, int) for d in dims) else None


def _evaluated(
    node: onnx.NodeProto, inputs: list[np.ndarray | None], opsets: Sequence[onnx.OperatorSetIdProto]
) -> list[np.ndarray] | None:
    """One node's outputs on constant inputs, by ONNX's reference evaluator (None where it cannot run it)."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: value for name, value in zip(node.input, inputs, strict=True) if name and value is not None}
    graph = helper.make_graph(
        [node],
        "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in node.output if o],
    )
    try:
        results = ReferenceEvaluator(helper.make_model(graph, opset_imports=list(opsets))).run(None, feeds)
    except Exception:  # an operator the reference evaluator lacks, or inputs it refuses: not folded
        return None
    return [np.asarray(r) for r in results]


def _tensor(info: onnx.ValueInfoProto) -> Tensor:
    ttype = info.type.tensor_type
    shape = None
    if ttype.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim)
    return Tensor(info.name, shape, _np_dtype(ttype.elem_type) if ttype.elem_type else None)


def _np_dtype(elem_type: int) -> str | None:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name)
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


def _node(proto: onnx.NodeProto, name: str, tensors: dict[str, Tensor], values: dict[str, np.ndarray]) -> Node:
    """The planner's typed facts about one ONNX node."""
    attrs: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
    rank = tensors[proto.input[0]].rank if proto.input and proto.input[0] in tensors else None
    op = proto.op_type
    axes: tuple[int, ...] | None = None
    if op in ("ReduceMean", "ReduceSum") and rank:
        raw = attrs.get("axes")
        if raw is None and len(proto.input) > 1 and proto.input[1] in values:
            raw = values[proto.input[1]].tolist()
        if raw is None and attrs.get("noop_with_empty_axes", 0):
            axes = ()  # no axes and "noop": the node is an identity
        else:
            axes = tuple(sorted(int(a) % rank for a in (raw if raw is not None else range(rank))))
    whole_window = op in ("AveragePool", "MaxPool") and rank == 4 and _covers_map(proto, attrs, tensors)
    facts = _gradient_facts(op, attrs, proto, tensors, values, rank)
    axes = facts.pop("axes", axes)  # LayerNormalization: the normalised axes
    return Node(
        name,
        op,
        tuple(proto.input),
        tuple(proto.output),
        scope=_scope(proto),
        scoped=proto.name.startswith("/") or any(p.key == "pkg.torch.onnx.name_scopes" for p in proto.metadata_props),
        has_subgraph=any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in proto.attribute),
        axes=axes,
        keepdims=bool(attrs.get("keepdims", 1)),
        perm=tuple(int(p) for p in attrs["perm"]) if op == "Transpose" and "perm" in attrs else None,
        whole_window=whole_window,
        start=int(attrs.get("start", 0)),
        weight_inner=_weight_inner(op, attrs, tensors, proto),
        pointwise=(op == "Conv" and _pointwise(attrs, tensors.get(proto.input[1]) if len(proto.input) > 1 else None))
        or (op in ("AveragePool", "MaxPool") and _pointwise(attrs, None)),
        transpose_b=op == "Gemm" and bool(attrs.get("transB", 0)),
        sliding=_sliding(attrs, tensors, proto) if op == "Conv" else None,
        plain_product=op == "MatMul"
        or (
            op == "Gemm"
            and not attrs.get("transA", 0)
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
        ),
        **facts,
        handle=proto,
    )


def _covers_map(proto: onnx.NodeProto, attrs: dict[str, Any], tensors: dict[str, Tensor]) -> bool:
    """A pool with one window over the whole map, no padding: the kernel is the map's size, or larger with
    ``ceil_mode`` (Hugging Face's EfficientNet pools with a 1280 x 1280 kernel), whose window ONNX clips to the
    map, dividing by H x W whatever ``count_include_pad`` says (there is no padding to count)."""
    spatial = list((tensors[proto.input[0]].shape or ())[2:])
    pooled = list((tensors.get(proto.output[0], Tensor("", None, None)).shape or ())[2:])
    kernel = list(attrs.get("kernel_shape", []))
    if any(attrs.get("pads", [])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        return False
    if len(kernel) != 2 or len(spatial) != 2 or not all(isinstance(d, int) for d in spatial):
        return False
    if kernel == spatial:
        return True
    larger = all(k >= d for k, d in zip(kernel, spatial, strict=True))
    return larger and bool(attrs.get("ceil_mode", 0)) and pooled == [1, 1]


_AXIS_DEFAULTS = {"Softmax": -1, "LogSoftmax": -1, "Concat": 0, "Split": 0, "Flatten": 1, "QuantizeLinear": 1,
                  "DequantizeLinear": 1}  # fmt: skip


def _gradient_facts(
    op: str, attrs: dict[str, Any], proto: onnx.NodeProto, tensors: dict[str, Tensor], values: dict[str, np.ndarray],
    rank: int | None,
) -> dict[str, Any]:  # fmt: skip
    """The typed facts the backward rules read (see :class:`Node`), by operator."""
    facts: dict[str, Any] = {}
    if op == "Conv":
        facts["groups"] = int(attrs.get("group", 1))
    elif op in ("MaxPool", "AveragePool"):
        facts["pool"] = _pooling(op, attrs, tensors, proto)
    elif op in _AXIS_DEFAULTS:
        axis = int(attrs.get("axis", _AXIS_DEFAULTS[op]))
        facts["axis"] = axis % rank if rank else axis
        if op == "Split":
            facts["split"] = _split_sizes(attrs, proto, tensors, values, facts["axis"])
    elif op == "LayerNormalization" and rank:
        facts["axes"] = tuple(range(int(attrs.get("axis", -1)) % rank, rank))
        facts["epsilon"] = float(attrs.get("epsilon", 1e-5))
    elif op == "BatchNormalization":
        facts["epsilon"] = float(attrs.get("epsilon", 1e-5))
    elif op == "Gemm":
        facts |= {"alpha": float(attrs.get("alpha", 1.0)), "beta": float(attrs.get("beta", 1.0))}
        facts["transpose_a"] = bool(attrs.get("transA", 0))
    elif op == "HardSigmoid":
        facts |= {"alpha": float(attrs.get("alpha", 0.2)), "beta": float(attrs.get("beta", 0.5))}
    elif op == "LeakyRelu":
        facts["alpha"] = float(attrs.get("alpha", 0.01))
    elif op == "Gelu":
        facts["approximate"] = attrs.get("approximate", b"none") in (b"tanh", "tanh")
    elif op == "Clip":
        facts["bounds"] = _clip_bounds(attrs, proto, values)
    elif op == "Slice":
        facts["slicing"] = _slicing(proto, values, rank)
    return facts


def _pooling(op: str, attrs: dict[str, Any], tensors: dict[str, Tensor], proto: onnx.NodeProto) -> Pooling | None:
    window = _sliding(attrs, tensors, proto)
    if window is None:
        return None
    counts = op == "MaxPool" or bool(attrs.get("count_include_pad", 0))
    return Pooling(window, bool(attrs.get("ceil_mode", 0)), counts)


def _split_sizes(
    attrs: dict[str, Any], proto: onnx.NodeProto, tensors: dict[str, Tensor], values: dict[str, np.ndarray], axis: int
) -> tuple[int, ...] | None:
    if "split" in attrs:
        return tuple(int(v) for v in attrs["split"])
    if len(proto.input) > 1 and proto.input[1]:
        known = values.get(proto.input[1])
        return None if known is None else tuple(int(v) for v in known.reshape(-1))
    sizes = [(tensors[o].shape or ())[axis] if o in tensors and tensors[o].rank else None for o in proto.output]
    return tuple(sizes) if all(isinstance(d, int) for d in sizes) else None  # type: ignore[arg-type]


def _clip_bounds(
    attrs: dict[str, Any], proto: onnx.NodeProto, values: dict[str, np.ndarray]
) -> tuple[float, float] | None:
    bounds = [float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))]
    for k, name in enumerate(proto.input[1:3]):
        if not name:
            continue
        if name not in values:
            return None  # a computed bound
        bounds[k] = float(values[name].reshape(-1)[0])
    return bounds[0], bounds[1]


def _slicing(proto: onnx.NodeProto, values: dict[str, np.ndarray], rank: int | None) -> Slicing | None:
    parts = [values.get(name) if name else None for name in list(proto.input[1:5]) + [""] * (5 - len(proto.input))]
    starts, ends, axes, steps = parts
    if starts is None or ends is None or (len(proto.input) > 3 and proto.input[3] and axes is None):
        return None
    if len(proto.input) > 4 and proto.input[4] and steps is None:
        return None
    count = len(starts.reshape(-1))
    axis_list = [int(a) for a in axes.reshape(-1)] if axes is not None else list(range(count))
    if rank:
        axis_list = [a % rank for a in axis_list]
    step_list = [int(v) for v in steps.reshape(-1)] if steps is not None else [1] * count
    return Slicing(tuple(int(v) for v in starts.reshape(-1)), tuple(int(v) for v in ends.reshape(-1)), tuple(axis_list),
                   tuple(step_list))  # fmt: skip


def _sliding(attrs: dict[str, Any], tensors: dict[str, Tensor], proto: onnx.NodeProto) -> Sliding | None:
    """A 2-D Conv's kernel, strides, start pads and dilations (None: not 2-D, or 'SAME' on an unknown size)."""
    weight = tensors.get(proto.input[1]) if len(proto.input) > 1 else None
    kernel = list(attrs.get("kernel_shape", [])) or list((weight.shape or ())[2:] if weight else [])
    if len(kernel) != 2 or not all(isinstance(k, int) for k in kernel):
        return None
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if auto_pad in (b"SAME_UPPER", b"SAME_LOWER"):
        size = (tensors[proto.input[0]].shape or (None,) * 4)[2:]
        if len(size) != 2 or not all(isinstance(d, int) for d in size):
            return None
        for axis, d in enumerate(size):
            assert isinstance(d, int)
            total = max((-(-d // strides[axis]) - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - d, 0)
            begin = total // 2 if auto_pad == b"SAME_UPPER" else total - total // 2
            pads[axis], pads[axis + 2] = begin, total - begin
    elif auto_pad == b"VALID":
        pads = [0, 0, 0, 0]
    ends = (pads[2], pads[3]) if len(pads) == 4 else (0, 0)
    return Sliding((kernel[0], kernel[1]), (strides[0], strides[1]), (pads[0], pads[1]), (dilations[0], dilations[1]),
                   ends)  # fmt: skip


def _pointwise(attrs: dict[str, Any], weight: Tensor | None) -> bool:
    """A Conv or pool that maps each position to itself: 1 x 1 kernel, stride 1, no padding."""
    kernel = list(attrs.get("kernel_shape", [])) or list((weight.shape or ())[2:] if weight else [])
    pads, strides = list(attrs.get("pads", [])), list(attrs.get("strides", []))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    return kernel == [1, 1] and not any(pads) and all(s == 1 for s in strides) and auto_pad in (b"NOTSET", b"VALID")


def _weight_inner(
    op: str, attrs: dict[str, Any], tensors: dict[str, Tensor], proto: onnx.NodeProto
) -> tuple[Dim, ...] | None:
    """The weight dimensions summed for each output value: Conv (O, I/g, kh, kw) -> (I/g, kh, kw)."""
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(proto.input) < 2:
        return None
    weight = tensors.get(proto.input[1])
    if weight is None or weight.shape is None:
        return None
    if op in ("Conv", "ConvTranspose"):
        return weight.shape[1:]
    if op == "Gemm" and attrs.get("transB"):
        return weight.shape[1:]
    if len(weight.shape) == 1:  # a vector: x @ w sums over its one dimension
        return weight.shape
    return weight.shape[-2:-1]  # MatMul / Gemm: (..., K, N) sums over K


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_int", "value_ints"):
            return np.array(helper.get_attribute_value(attr), dtype=np.int64)
    return None


# -- writing ----------------------------------------------------------------------------------------


class OnnxBuilder:
    """:class:`ovxai.graph.ops.Builder` for ONNX: each node is a NodeProto appended to the model, each tensor
    handle the name of a tensor."""

    def __init__(self, model: onnx.ModelProto, graph: GraphView) -> None:
        self.model = model
        self.graph = graph
        self.opset = opset(model)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.outputs: dict[str, Sequence[Dim]] = {}
        self._count = 0
        self._copies: dict[str, int] = {}
        self.replaced: set[str] = set()  # original tensors now computed by hook nodes

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{NODE_PREFIX}{hint}_{self._count}"

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> list[str]:
        inputs = list(inputs)
        # Operands that this opset takes as inputs rather than attributes.
        if op == "Slice" and "starts" in attrs:
            inputs += [self._ints(attrs.pop("starts")), self._ints(attrs.pop("ends"))]
        elif op == "Slice":
            inputs.append(self._ints(attrs.pop("axes")))
        elif op == "Pad":
            inputs.append(self._ints(attrs.pop("pads")))
        elif op == "ScatterElements" and self.opset < 16:
            raise OvxaiError(
                f"the model's ONNX opset {self.opset} has no ScatterElements that adds (the backward of a max pool "
                "whose windows overlap)",
                "re-export the model with opset 16 or later",
            )
        elif op == "Unsqueeze":
            inputs.append(self._ints(attrs.pop("axes")))
        elif op == "TopK":
            inputs.append(self._ints([attrs.pop("k")]))
        elif op.startswith("Reduce") and (self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)):
            inputs.append(self._ints(attrs.pop("axes")))
        elif op == "Cast":
            attrs["to"] = helper.np_dtype_to_tensor_dtype(np.dtype(attrs["to"]))
        first = self._name(op)
        names = [first] + [self._name(f"{op}_{k}") for k in range(1, outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=first, **attrs))
        return names

    def _ints(self, values: Sequence[int]) -> str:
        return self.constant(np.array(values, dtype=np.int64))

    def constant(self, value: np.ndarray) -> str:
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def tensor(self, name: str) -> str:
        return name

    def dtype(self, name: str) -> str:
        dtype = self.graph.tensor(name).dtype
        if dtype is None:
            raise OvxaiError(f"the element type of '{name}' is unknown", "give the input shape as input_shape=")
        return dtype

    def stored(self, name: str) -> tuple[np.ndarray, str | None] | None:
        for init in self.model.graph.initializer:
            if init.name == name:
                return numpy_helper.to_array(init), None
        node = next((n for n in self.model.graph.node if name in n.output), None)
        value = _constant_node_value(node) if node is not None and node.op_type == "Constant" else None
        return None if value is None else (value, None)

    def replace(self, name: str, x: str) -> None:
        self.replaced.add(name)
        self.nodes.append(helper.make_node("Identity", [x], [name], name=self._name("replaced")))

    def copy_node(self, node: Node, inputs: Sequence[str | None], unpadded: bool = False) -> list[str]:
        copies = self._copies.get(node.name, 0)
        self._copies[node.name] = copies + 1
        copy = f"#{copies}" if copies else ""  # a node copied again (the shortcut's background) gets new names
        proto = _copied_proto(node, unpadded)
        proto.name = f"{NODE_PREFIX}tail/{node.name}{copy}"
        del proto.input[:]
        proto.input.extend(i or "" for i in inputs)
        outputs = [f"{NODE_PREFIX}tail/{o}{copy}" if o else "" for o in proto.output]
        del proto.output[:]
        proto.output.extend(outputs)
        self.nodes.append(proto)
        return outputs

    def output(self, x: str, name: str, shape: Sequence[Dim]) -> None:
        self.nodes.append(helper.make_node("Identity", [x], [name], name=f"{NODE_PREFIX}{name}"))
        self.outputs[name] = shape

    def indices(self, node: Node, x: str | None = None) -> str:
        """The original MaxPool's own ``Indices`` output, added to it (its first output is unchanged); for ``x``,
        those of a twin of the pool reading ``x``."""
        if x is not None:
            twin = onnx.NodeProto()
            twin.CopyFrom(node.handle)
            del twin.input[:], twin.output[:]
            twin.input.append(x)
            twin.name = self._name("MaxPool")
            twin.output.extend([f"{twin.name}_values", f"{twin.name}_indices"])
            self.nodes.append(twin)
            return str(twin.output[1])
        proto: onnx.NodeProto = node.handle
        if len(proto.output) < 2 or not proto.output[1]:
            del proto.output[1:]
            proto.output.append(f"{NODE_PREFIX}indices/{node.name}")
        return str(proto.output[1])

    def finish(self) -> onnx.ModelProto:
        """The model (edited in place) with the emitted nodes and the new graph outputs, typed by inference."""
        patched = self.model
        patched.graph.node.extend(self.nodes)
        patched.graph.initializer.extend(self.initializers)
        if self.replaced:
            _drop_replaced(patched.graph, self.replaced, set(self.outputs))
        inferred = ONNX.view(patched).tensors
        for name, expected in self.outputs.items():
            t = inferred[name]
            # Old opsets upgraded by the version converter can leave the shape uninferred: declare the
            # hook's own (symbolic where unknown) rather than nothing, which ONNX Runtime warns about.
            shape = t.shape if t.shape is not None and len(t.shape) == len(expected) else expected
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype or "float32"))
            patched.graph.output.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return patched


def _drop_replaced(graph: onnx.GraphProto, replaced: set[str], new_outputs: set[str]) -> None:
    """Remove the original producers of ``replaced`` (hook nodes now compute them), the nodes and weights
    that nothing reads any more, and sort the nodes topologically (the new producers come last)."""
    nodes = [n for n in graph.node if not (set(n.output) & replaced and not n.name.startswith(NODE_PREFIX))]
    outputs = {o.name for o in graph.output} | new_outputs
    while True:  # nodes whose every output went unread
        read = outputs | {i for n in nodes for i in _reads(n)}
        alive = [n for n in nodes if any(o in read for o in n.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    unused = {i.name for i in graph.initializer} - read
    kept = [i for i in graph.initializer if i.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name not in unused]  # old IRs list weights as inputs too
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.node[:]
    graph.node.extend(_sorted(nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}))


def _reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads: its inputs and any outer tensor its subgraphs name."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names |= _reads(inner)
    return names


def _sorted(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """A topological order: the earliest ready node first (Kahn), so an already sorted part keeps its order."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    readers: list[list[int]] = [[] for _ in nodes]
    pending = []
    for k, node in enumerate(nodes):
        needs = {producer[i] for i in _reads(node) if i in producer and i not in available}
        pending.append(len(needs))
        for j in needs:
            readers[j].append(k)
    ready = [k for k, count in enumerate(pending) if count == 0]
    heapq.heapify(ready)
    order: list[onnx.NodeProto] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for r in readers[k]:
            pending[r] -= 1
            if pending[r] == 0:
                heapq.heappush(ready, r)
    if len(order) != len(nodes):
        raise RuntimeError("ovxai produced a graph with a cycle, please report")
    return order


# -- eager evaluation (tests) -----------------------------------------------------------------------


def _copied_proto(node: Node, unpadded: bool) -> onnx.NodeProto:
    """A copy of ``node``'s NodeProto; ``unpadded``: without its padding (a window's copy reads padded patches)."""
    proto = onnx.NodeProto()
    proto.CopyFrom(node.handle)
    if unpadded:
        kept = [a for a in proto.attribute if a.name not in ("pads", "auto_pad")]
        del proto.attribute[:]
        proto.attribute.extend(kept)
    return proto


def reference_runner(model: onnx.ModelProto) -> RunNode:
    """Runs single nodes of ``model`` with ONNX's reference implementation (numpy, no engine): the original
    nodes a :class:`~ovxai.graph.numpy_ops.NumpyBuilder` copies."""
    from onnx.reference import ReferenceEvaluator

    version = opset(model)

    def run(node: Node, inputs: Sequence[np.ndarray | None], unpadded: bool) -> list[np.ndarray]:
        proto = _copied_proto(node, unpadded)
        names = [f"in{k}" if x is not None else "" for k, x in enumerate(inputs)]
        del proto.input[:]
        proto.input.extend(names)
        outputs = [f"out{k}" for k in range(len(proto.output))]
        del proto.output[:]
        proto.output.extend(outputs)
        feeds = {name: x for name, x in zip(names, inputs, strict=True) if x is not None}
        return [np.asarray(r) for r in ReferenceEvaluator(proto, opsets={"": version}).run(None, feeds)]

    return run


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The model's stored constants by name."""
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
