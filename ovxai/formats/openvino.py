"""OpenVINO adapter: read IR into a :class:`GraphView`, emit the hook as opset nodes, write IR.

OpenVINO's Python API cannot clone a single node, so the tail is copied by cloning the whole
model once and rewiring the clone's tail nodes onto the hook (they keep the clone's constants, which
share the originals' data: the IR writer stores it once; the rest of the clone is unreachable and dropped).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovxai.conventions import NODE_PREFIX
from ovxai.errors import OvxaiError, engine_reason
from ovxai.graph.batch import ReshapeFix
from ovxai.graph.view import Dim, GraphView, Node, Sliding, Tensor, scope_from_name
from ovxai.metadata import Entries

try:
    import openvino as ov
    import openvino.opset13 as opset
    from openvino import opset3, opset4, opset6, opset8, opset11, passes
except ImportError:  # pragma: no cover - openvino is a dependency; the message is for broken installs
    ov = None

_SKIPPED = ("Parameter", "Constant", "Result")
_OV_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "uint8": "u8", "int64": "i64", "int32": "i32"}
_SMALL_CONSTANT = 64  # elements: constants up to this size are kept in the view (shapes, axes)
_WEIGHT = 4096  # elements: larger constants are weights, which the private folding never computes with

# OpenVINO operation types under their ONNX names: the planner, the target resolver and the cost
# estimate speak one vocabulary. Types not listed keep their own name (FakeQuantize, ...).
ONNX_NAMES = {
    "ShapeOf": "Shape",
    "Convolution": "Conv",
    "GroupConvolution": "Conv",
    "ConvolutionBackpropData": "ConvTranspose",
    "AvgPool": "AveragePool",
    "Multiply": "Mul",
    "Subtract": "Sub",
    "Divide": "Div",
    "Power": "Pow",
    "Maximum": "Max",
    "Minimum": "Min",
    "Convert": "Cast",
    "Select": "Where",
    "Broadcast": "Expand",
    "Clamp": "Clip",
    "HSwish": "HardSwish",
    "HSigmoid": "HardSigmoid",
    "BatchNormInference": "BatchNormalization",
    "Interpolate": "Resize",
    "StridedSlice": "Slice",
    "LogicalNot": "Not",
    "MVN": "MeanVarianceNormalization",
    "NormalizeL2": "LpNormalization",
    "TensorIterator": "Loop",
}
_SUBGRAPH_OPS = ("If", "Loop", "TensorIterator")


def _require_openvino() -> None:
    if ov is None:
        raise OvxaiError("OpenVINO IR needs the 'openvino' package", "pip install openvino")


class OpenVinoFormat:
    """:class:`ovxai.formats.Format` for OpenVINO IR (``openvino.Model``)."""

    name = "OpenVINO IR"
    suffix = ".xml"

    def load(self, path: Path) -> Any:
        """Read an IR (.xml + .bin) or raise a one-line error."""
        _require_openvino()
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise OvxaiError(f"the weights file '{weights}' of '{path}' is missing", "keep the .bin beside the .xml")
        try:
            model = ov.Core().read_model(os.fspath(path), os.fspath(weights))
        except RuntimeError as exc:
            reason = engine_reason(exc)
            fix = (
                "the .bin does not belong to this .xml; copy both from the same export" if "weights" in reason else None
            )
            raise OvxaiError(
                f"'{path}' is not a readable OpenVINO IR: {reason}", fix or "re-export the model"
            ) from None
        _name_tensors(model)
        return model

    def view(self, model: Any) -> GraphView:
        """The format-neutral view of an OpenVINO model, op types under their ONNX names."""
        ops = model.get_ordered_ops()
        friendly = Counter(op.get_friendly_name() for op in ops)
        tensors: dict[str, Tensor] = {}
        values: dict[str, np.ndarray] = {}
        nodes: list[Node] = []
        inputs: list[str] = []
        constants: set[str] = set()
        for output, value in static_values(model):  # computed from constants and static shapes only
            if _from_shapes(output):  # fixed whatever the batch (weights computed in the graph stay what they are)
                constants.add(tensor_id(output))
            if value.size <= _SMALL_CONSTANT:
                values[tensor_id(output)] = value
        for op in ops:
            kind = op.get_type_name()
            for out in op.outputs():
                tensors[tensor_id(out)] = _tensor(out)
            if kind == "Parameter":
                inputs.append(tensor_id(op.output(0)))
            elif kind == "Constant":
                constants.add(tensor_id(op.output(0)))
                if int(np.prod(op.get_output_shape(0))) <= _SMALL_CONSTANT:
                    values[tensor_id(op.output(0))] = op.get_data()
            if kind in _SKIPPED:
                continue
            name = op.get_friendly_name()
            unique = name if friendly[name] == 1 else f"{name}#{op.get_name()}"
            nodes.append(_node(op, unique, tensors, values))
        for op in ops:  # a quantiser's ranges, whatever their size: they decide where the hook may tap
            if op.get_type_name() == "FakeQuantize":
                for port in range(1, 5):
                    source = op.input_value(port)
                    if _is_constant(source):
                        values[tensor_id(source)] = source.get_node().get_data()
        outputs = [tensor_id(r.input_value(0)) for r in model.get_results()]
        aliases = {n: tensor_id(o) for op in ops for o in op.outputs() for n in o.get_names()}
        return GraphView(nodes, tensors, inputs, outputs, constants, aliases, values)

    def fold_static_shapes(self, model: Any) -> None:
        """Replace every value computed from shapes that the model's fixed dimensions determine by a constant.

        Such arithmetic (a bias reshaped to the rank of a convolution's output, pool axes counted from
        ``ShapeOf(ShapeOf(x))``: what OpenVINO's ONNX frontend writes under ``read_model``) is folded by
        the engine when it compiles the plain model, so the compiled original does not change. Left in
        the graph, it gives the CPU plugin's symbolic shape optimisation an early ``ShapeOf`` (of the first
        convolution's output) to serve the hook's batch size from; that keeps the ShapeOf alive, the
        convolution gets a second reader and loses its fused bias and output quantiser, and an INT8
        model's prediction moves. Weights and batch-dependent values are left alone.
        """
        for output, value in static_values(model):
            if _from_shapes(output):
                constant = opset.constant(value)
                constant.set_friendly_name(output.get_node().get_friendly_name())
                for reader in list(output.get_target_inputs()):
                    reader.replace_source_output(constant.output(0))
        model.validate_nodes_and_infer_types()

    def set_input_shape(self, model: Any, name: str, dims: Sequence[int | str]) -> None:
        image = next(p.output(0) for p in model.get_parameters() if tensor_id(p.output(0)) == name)
        shape = ov.PartialShape([ov.Dimension(v) if isinstance(v, int) else ov.Dimension() for v in dims])
        try:
            model.reshape({image: shape})
        except RuntimeError as exc:
            raise OvxaiError(
                f"the model cannot take input shape {shape}: {engine_reason(exc)}",
                "re-export it with a dynamic batch (and the wanted size)",
            ) from None

    def rewrite_reshapes(self, model: Any, fixes: Sequence[ReshapeFix]) -> None:
        for fix in fixes:
            op = fix.node.handle
            freed = opset.reshape(op.input_value(0), opset.constant(fix.target), special_zero=True)
            freed.set_friendly_name(op.get_friendly_name())
            op.output(0).replace(freed.output(0))

    def hook_ops(self, model: Any, graph: GraphView) -> OvOps:
        return OvOps(model)

    def set_metadata(self, model: Any, entries: Entries) -> None:
        for (section, key), value in entries.items():
            model.set_rt_info(value, [section, key])

    def save(self, model: Any, path: Path, fp16: bool) -> list[Path]:
        """Write ``path`` and its .bin; weights in FP16 unless ``fp16`` is False (like OpenVINO's tools)."""
        # OpenVINO names the weights by replacing a lower-case '.xml' only: write that, then rename.
        xml = path.with_name(f"{path.stem}.xml")
        ov.save_model(model, os.fspath(xml), compress_to_fp16=fp16)
        if xml != path:
            xml.rename(path)
        return [path, path.with_suffix(".bin")]

    def convert(self, path: Path) -> Any:
        """An ONNX file as an ``ov.Model`` (``ov.convert_model``), with OpenVINO's conversion telemetry off."""
        _require_openvino()
        without_telemetry()
        try:
            model = ov.convert_model(os.fspath(path))
        except Exception as exc:
            raise OvxaiError(
                f"OpenVINO could not convert '{path}': {engine_reason(exc)}", "write .onnx instead"
            ) from None
        _name_tensors(model)
        return model

    # f32, and the CPU plugin's default (bf16 or f16 on CPUs that have them): deployments use both
    precisions: tuple[str, ...] = ("f32", "default")

    def smoke_run(self, path: Path, x: np.ndarray, precision: str = "f32") -> dict[str, np.ndarray]:
        return run_once(path, x, precision)

    def mantissa_bits(self, precision: str) -> int:
        """The CPU plugin's inference precision ("default": what it picks on this CPU)."""
        if precision != "default":
            return _MANTISSA[precision]
        return _MANTISSA.get(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(), 23)


OPENVINO = OpenVinoFormat()
_MANTISSA = {"f32": 23, "bf16": 7, "f16": 10}


def run_once(path: Path, x: np.ndarray, precision: str = "f32") -> dict[str, np.ndarray]:
    """Compile ``path`` (IR or ONNX) on CPU in ``precision`` ("f32", or "default": the plugin's choice) and run it
    on ``x``: the outputs under each of their tensor names."""
    _require_openvino()
    weights = path.with_suffix(".bin") if path.suffix.lower() == ".xml" else None
    model = ov.Core().read_model(os.fspath(path), None if weights is None else os.fspath(weights))
    config = {} if precision == "default" else {"INFERENCE_PRECISION_HINT": precision}
    compiled = ov.Core().compile_model(model, "CPU", config)
    result = compiled(x)
    named = {}
    for out in compiled.outputs:
        for name in {tensor_id(out), *out.get_names()}:
            named[name] = np.asarray(result[out])
    return named


def _is_constant(output: Any) -> bool:
    return bool(output.get_node().get_type_name() == "Constant")


def without_telemetry() -> None:
    """OpenVINO's converter reports usage over the network from child processes; a tool that converts
    users' models must not: point the converter at its own no-op stub (for this process)."""
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils

    telemetry_utils.tm = telemetry_stub
    convert_impl.tm = telemetry_stub


# -- reading ----------------------------------------------------------------------------------------


def static_values(model: Any) -> list[tuple[Any, np.ndarray]]:
    """The non-constant tensors whose value is fixed whatever the batch size, with that value: OpenVINO's own
    constant folding and shape propagation, run on a private clone whose inputs take any batch (the hook
    changes the batch: a value that depends on it is never a constant to it) and in which weights stand as
    parameters (nothing large is computed). Only tensors that an unfolded node reads are listed."""
    originals = model.get_ordered_ops()
    clone = model.clone()
    twins = clone.get_ordered_ops()  # in the originals' order (a reshape may sort them again)
    assert [o.get_type_name() for o in originals] == [t.get_type_name() for t in twins]
    any_batch = {}
    for parameter in clone.get_parameters():
        shape = parameter.get_output_partial_shape(0)
        if shape.rank.is_static and len(shape) > 0:
            any_batch[parameter.output(0)] = ov.PartialShape([ov.Dimension(), *list(shape)[1:]])
    try:
        clone.reshape(any_batch)
    except RuntimeError:  # a batch baked into the graph: no fact is safe from it
        return []
    weights = []
    for twin in twins:
        if twin.get_type_name() == "Constant" and int(np.prod(twin.get_output_shape(0))) > _WEIGHT:
            weight = opset.parameter(twin.get_output_partial_shape(0), twin.get_output_element_type(0))
            twin.output(0).replace(weight.output(0))
            weights.append(weight)
    clone.add_parameters(weights)
    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(clone)
    kept = {op.get_name() for op in clone.get_ordered_ops()}
    found: dict[str, tuple[Any, np.ndarray]] = {}
    for original, twin in zip(originals, twins, strict=True):
        if twin.get_name() not in kept or twin.get_type_name() == "Constant":
            continue
        for port in range(twin.get_input_size()):
            source, folded = original.input_value(port), twin.input_value(port)
            if _is_constant(folded) and not _is_constant(source):
                found.setdefault(tensor_id(source), (source, folded.get_node().get_data().copy()))
    return list(found.values())


def _name_tensors(model: Any) -> None:
    """Give every unnamed tensor (NNCF's quantisers leave theirs unnamed) the name '<node>:<port>' from its
    node's friendly name, which the IR keeps: the same name on every read, for ``--layer`` and ``inspect``."""
    ops = model.get_ordered_ops()
    taken = {n for op in ops for o in op.outputs() for n in o.get_names()}
    for op in ops:
        for out in op.outputs():
            if out.get_names() or op.get_type_name() in _SKIPPED[1:]:
                continue
            name = f"{op.get_friendly_name()}:{out.get_index()}"
            if name in taken:
                name = f"{op.get_friendly_name()}#{op.get_name()}:{out.get_index()}"
            taken.add(name)
            out.get_tensor().set_names({name})


def _from_shapes(output: Any) -> bool:
    """Whether a tensor is computed from some tensor's shape (a ShapeOf above it), not from weights only."""
    seen: set[str] = set()
    todo = [output.get_node()]
    while todo:
        node = todo.pop()
        if node.get_name() in seen:
            continue
        seen.add(node.get_name())
        if node.get_type_name() == "ShapeOf":
            return True
        todo.extend(i.get_source_output().get_node() for i in node.inputs())
    return False


def tensor_id(output: Any) -> str:
    names = output.get_names()
    return min(names) if names else f"{output.get_node().get_name()}:{output.get_index()}"


def _tensor(output: Any) -> Tensor:
    shape = output.get_partial_shape()
    dims = None if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else None for d in shape)
    try:
        dtype = np.dtype(output.get_element_type().to_dtype()).name
    except (RuntimeError, TypeError):
        dtype = None
    return Tensor(tensor_id(output), dims, dtype)


def _node(op: Any, name: str, tensors: dict[str, Tensor], values: dict[str, np.ndarray]) -> Node:
    """The planner's typed facts about one OpenVINO operation."""
    kind = op.get_type_name()
    inputs = tuple(tensor_id(i.get_source_output()) for i in op.inputs())
    rank = tensors[inputs[0]].rank if inputs else None
    attrs = op.get_attributes()
    axes: tuple[int, ...] | None = None
    if kind == "ReduceMean" and rank and inputs[1] in values:
        axes = tuple(sorted(int(a) % rank for a in np.atleast_1d(values[inputs[1]])))
    perm = values.get(inputs[1]) if kind == "Transpose" else None
    whole_window = False
    if kind in ("AvgPool", "MaxPool") and rank == 4:
        spatial = list((tensors[inputs[0]].shape or ())[2:])
        pads = [*attrs.get("pads_begin", []), *attrs.get("pads_end", [])]
        whole_window = list(attrs.get("kernel", [])) == spatial and not any(pads)
    op_name = ONNX_NAMES.get(kind, kind)
    if kind == "AdaptiveAvgPool" and inputs[1] in values and values[inputs[1]].tolist() == [1, 1]:
        op_name = "GlobalAveragePool"  # adaptive_avg_pool2d(x, 1) as OpenVINO may keep it: the same mean
    return Node(
        name,
        op_name,
        inputs,
        tuple(tensor_id(o) for o in op.outputs()),
        scope=scope_from_name(op.get_friendly_name().removesuffix("/WithoutBiases")),  # a biased op, split
        scoped=op.get_friendly_name().startswith(("__module.", "/", "aten::")),
        has_subgraph=kind in _SUBGRAPH_OPS,
        axes=axes,
        keepdims=bool(attrs.get("keep_dims", True)),
        perm=None if perm is None else tuple(int(p) for p in perm),
        whole_window=whole_window,
        weight_inner=_weight_inner(kind, attrs, [tensors[i] for i in inputs]),
        pointwise=(kind in ("Convolution", "GroupConvolution") and _pointwise(attrs, tensors[inputs[1]].shape or ()))
        or (kind in ("AvgPool", "MaxPool") and _pointwise(attrs, tuple(attrs.get("kernel", ())))),
        transpose_b=kind == "MatMul" and bool(attrs.get("transpose_b", False)),
        sliding=_sliding(kind, attrs, tensors[inputs[1]].shape if len(inputs) > 1 else None),
        plain_product=kind == "MatMul" and not attrs.get("transpose_a", False),
        levels=int(attrs.get("levels", 0)) if kind == "FakeQuantize" else 0,
        handle=op,
    )


def _sliding(kind: str, attrs: dict[str, Any], weight: tuple[Dim, ...] | None) -> Sliding | None:
    """A 2-D convolution's kernel, strides, start pads (resolved by OpenVINO for 'same' padding) and dilations."""
    if kind not in ("Convolution", "GroupConvolution") or weight is None:
        return None
    kernel = tuple(weight[-2:])
    if len(kernel) != 2 or len(attrs.get("strides", [])) != 2 or not all(isinstance(k, int) for k in kernel):
        return None
    strides, pads, dilations = (tuple(int(v) for v in attrs[a]) for a in ("strides", "pads_begin", "dilations"))
    return Sliding(kernel, strides, pads, dilations)  # type: ignore[arg-type]


def _pointwise(attrs: dict[str, Any], kernel: tuple[Dim, ...]) -> bool:
    """A convolution or pool that maps each position to itself: 1 x 1 kernel, stride 1, no padding."""
    pads = [*attrs.get("pads_begin", []), *attrs.get("pads_end", [])]
    return tuple(kernel)[-2:] == (1, 1) and not any(pads) and all(s == 1 for s in attrs.get("strides", []))


def _weight_inner(kind: str, attrs: dict[str, Any], inputs: list[Tensor]) -> tuple[Dim, ...] | None:
    """The weight dimensions summed for each output value, in OpenVINO's weight layouts."""
    if len(inputs) < 2 or inputs[1].shape is None:
        return None
    weight = inputs[1].shape
    if kind in ("Convolution", "ConvolutionBackpropData"):
        return weight[1:]  # (O, I, kh, kw)
    if kind == "GroupConvolution":
        return weight[2:]  # (G, O/G, I/G, kh, kw)
    if kind == "MatMul":
        if len(weight) == 1:  # a vector: x @ w sums over its one dimension
            return weight
        return weight[-1:] if attrs.get("transpose_b") else weight[-2:-1]
    return None


# -- writing ----------------------------------------------------------------------------------------


class OvOps:
    """:class:`ovxai.graph.ops.Ops` for OpenVINO: tensors are ``ov.Output`` handles."""

    def __init__(self, model: Any) -> None:
        self.model = model
        # A Result's own output carries its input's names: it is never the tensor asked for.
        ops = [op for op in model.get_ordered_ops() if op.get_type_name() != "Result"]
        self.by_id = {tensor_id(o): o for op in ops for o in op.outputs()}
        self.results: list[Any] = []
        self._count = 0
        self._clones: list[dict[int, Any]] = []
        self._copies: dict[str, int] = {}
        self._keep_alive: list[list[Any]] = []

    def _named(self, node: Any) -> Any:
        self._count += 1
        node.set_friendly_name(f"{NODE_PREFIX}{node.get_type_name()}_{self._count}")
        return node.output(0)

    def _twin(self, node: Node) -> Any:
        """A fresh copy of ``node``: its twin in the first clone of the model where that twin is unused.

        Clones are made lazily (most hooks copy each tail node once: one clone); only the tail's twins
        are ever wired in, the rest of each clone is unreachable and dropped on saving."""
        for twins in self._clones:
            twin = twins.pop(id(node.handle), None)
            if twin is not None:
                return twin
        originals = self.model.get_ordered_ops()
        clones = self.model.clone().get_ordered_ops()
        assert [o.get_type_name() for o in originals] == [c.get_type_name() for c in clones]
        self._keep_alive.append(clones)  # the cloned model's nodes must outlive the clone object
        self._clones.append({id(o): c for o, c in zip(originals, clones, strict=True)})
        return self._clones[-1].pop(id(node.handle))

    def tensor(self, name: str) -> Any:
        return self.by_id[name]

    def dtype(self, name: str) -> str:
        return str(np.dtype(self.by_id[name].get_element_type().to_dtype()).name)

    def i64(self, values: Sequence[int] | np.ndarray) -> Any:
        return self._named(opset.constant(np.array(values, dtype=np.int64)))

    def f32(self, value: float | np.ndarray) -> Any:
        return self._named(opset.constant(np.array(value, dtype=np.float32)))

    def shape(self, x: Any) -> Any:
        return self._named(opset3.shape_of(x, "i64"))

    def slice(self, x: Any, start: int, end: int) -> Any:
        return self._named(opset8.slice(x, self.i64([start]), self.i64([end]), self.i64([1])))

    def concat(self, xs: Sequence[Any], axis: int = 0) -> Any:
        return self._named(opset.concat(list(xs), axis))

    def binary(self, op: str, a: Any, b: Any) -> Any:
        make = {"Add": opset.add, "Sub": opset.subtract, "Mul": opset.multiply, "Div": opset.divide}
        make |= {"Greater": opset.greater, "Equal": opset.equal}
        return self._named(make[op](a, b))

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
        make = {"ReduceMin": opset.reduce_min, "ReduceMax": opset.reduce_max, "ReduceSum": opset.reduce_sum}[op]
        return self._named(make(x, self.i64([axis]), keep_dims=True))

    def topk(self, x: Any, k: int) -> Any:
        node = opset11.topk(x, self._scalar(k), -1, "max", "value", "i64")
        self._named(node)
        return node.output(1)

    def gather(self, x: Any, indices: Any, axis: int) -> Any:
        return self._named(opset8.gather(x, indices, self._scalar(axis)))

    def gather_elements(self, x: Any, indices: Any, axis: int) -> Any:
        return self._named(opset6.gather_elements(x, indices, axis))

    def relaid(self, name: str, shape: Sequence[int], perm: Sequence[int]) -> Any:
        source = self.by_id[name]
        producer = source.get_node()
        decompressed = producer.get_type_name() == "Convert" and _is_constant(producer.input_value(0))
        stored = producer.input_value(0) if decompressed else source  # FP16 weights: re-lay the FP16 data
        if not _is_constant(stored):  # computed from constants (dequantised): the plugin folds the re-layout
            return self.transpose(self.reshape(source, self.i64(shape)), perm)
        data = stored.get_node().get_data()
        relaid = self._named(opset.constant(np.ascontiguousarray(data.reshape(shape).transpose(perm))))
        return self._named(opset.convert(relaid, source.get_element_type())) if decompressed else relaid

    def replace(self, name: str, x: Any) -> None:
        original = self.by_id[name]
        names = original.get_names()
        original.replace(x)
        original.get_tensor().set_names(set())
        x.get_tensor().set_names(names)
        self.by_id[name] = x

    def copy_node(self, node: Node, inputs: Sequence[Any], unpadded: bool = False) -> list[Any]:
        twin = self._twin(node)
        if unpadded:
            for name in ("pads_begin", "pads_end"):
                twin.set_attribute(name, [0, 0])
            twin.set_attribute("auto_pad", "explicit")
        for port, source in enumerate(inputs):
            if _is_constant(source) and _is_constant(twin.input_value(port)):
                # The copy keeps its own clone of each constant: a constant shared with the original
                # path stops the CPU plugin from fusing it there (an INT8 FullyConnected then loses its
                # bias fusion and its f32 output, and the prediction moves). The IR writer stores
                # identical data once, so no weight is stored twice.
                continue
            twin.input(port).replace_source_output(source)
        copies = self._copies.get(node.name, 0)
        self._copies[node.name] = copies + 1
        copy = f"#{copies}" if copies else ""  # a node copied again (the shortcut's background) gets new names
        twin.set_friendly_name(f"{NODE_PREFIX}tail/{node.name}{copy}")
        for out in twin.outputs():  # the clone's tensors carry the originals' names: rename them
            out.get_tensor().set_names({f"{NODE_PREFIX}tail/{n}{copy}" for n in out.get_names()})
        twin.validate_and_infer_types()
        return list(twin.outputs())

    def output(self, x: Any, name: str, shape: Sequence[Dim]) -> None:
        x.get_tensor().set_names({name})
        result = opset.result(x)
        result.set_friendly_name(name)
        self.results.append(result)

    def finish(self) -> Any:
        for result in self.model.get_results():  # a name for every output (torch conversions leave some without)
            source = result.input_value(0)
            if not source.get_names():
                source.get_tensor().set_names({tensor_id(source)})
        self.model.add_results(self.results)
        self.model.validate_nodes_and_infer_types()
        return self.model
