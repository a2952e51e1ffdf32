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
from ovxai.graph.view import Dim, GraphView, Node, Pooling, Slicing, Sliding, Tensor, scope_from_name
from ovxai.interrupts import keep_signal_stack
from ovxai.metadata import Entries, ModelInfo, read_openvino

try:
    import openvino as ov
    import openvino.opset13 as opset
    from openvino import opset3, opset4, opset6, opset8, opset11, opset12, passes

    # ONNX operators that map one to one onto an opset function of the same inputs.
    _ELEMENTWISE: dict[str, Any] = {
        "Add": opset.add, "Sub": opset.subtract, "Mul": opset.multiply, "Div": opset.divide,
        "Greater": opset.greater, "Equal": opset.equal,
        "Abs": opset.abs, "Floor": opset.floor, "Relu": opset.relu, "Sigmoid": opset.sigmoid,
        "Exp": opset.exp, "Erf": opset.erf, "Tanh": opset.tanh, "Sqrt": opset.sqrt, "Neg": opset.negative,
        "Pow": opset.power,
    }  # fmt: skip
    _REDUCTIONS: dict[str, Any] = {
        "ReduceMin": opset.reduce_min, "ReduceMax": opset.reduce_max, "ReduceSum": opset.reduce_sum,
        "ReduceMean": opset.reduce_mean,
    }  # fmt: skip
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

    def builder(self, model: Any, graph: GraphView) -> OvBuilder:
        return OvBuilder(model)

    def set_metadata(self, model: Any, entries: Entries) -> None:
        for (section, key), value in entries.items():
            model.set_rt_info(value, [section, key])

    def metadata(self, model: Any) -> ModelInfo:
        return read_openvino(model)

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
    keep_signal_stack()
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
    if kind in ("ReduceMean", "ReduceSum", "MVN") and rank and inputs[1] in values:
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
        **_gradient_facts(kind, attrs, inputs, [tensors[tensor_id(out)] for out in op.outputs()], tensors, values),
        handle=op,
    )


def _gradient_facts(
    kind: str, attrs: dict[str, Any], inputs: tuple[str, ...], outputs: list[Tensor], tensors: dict[str, Tensor],
    values: dict[str, np.ndarray],
) -> dict[str, Any]:  # fmt: skip
    """The typed facts the backward rules read (see :class:`Node`), from OpenVINO's attributes and constant inputs."""
    rank = tensors[inputs[0]].rank if inputs else None
    constant = [values.get(i) for i in inputs]
    facts: dict[str, Any] = {}
    if kind == "GroupConvolution":
        weight = tensors[inputs[1]].shape
        facts["groups"] = weight[0] if weight and isinstance(weight[0], int) else 0  # 0: unknown, refused
    elif kind in ("MaxPool", "AvgPool"):
        facts["pool"] = _pooling(kind, attrs)
    elif kind in ("Softmax", "LogSoftmax", "Concat"):
        axis = int(attrs.get("axis", 1))
        facts["axis"] = axis % rank if rank else axis
    elif kind in ("Split", "VariadicSplit") and constant[1] is not None:
        axis = int(np.asarray(constant[1]).reshape(-1)[0])
        facts["axis"] = axis % rank if rank else axis
        sizes = [(t.shape or ())[facts["axis"]] if t.rank else None for t in outputs]
        if all(isinstance(d, int) for d in sizes):
            facts["split"] = tuple(sizes)
    elif kind == "MVN":
        facts |= {"epsilon": float(attrs.get("eps", 0.0)), "normalize_variance": bool(attrs["normalize_variance"])}
        facts["eps_inside"] = str(attrs.get("eps_mode", "INSIDE_SQRT")).upper() == "INSIDE_SQRT"
    elif kind == "BatchNormInference":
        facts["epsilon"] = float(attrs.get("epsilon", 0.0))
    elif kind == "MatMul":
        facts["transpose_a"] = bool(attrs.get("transpose_a", False))
    elif kind == "Clamp":
        facts["bounds"] = (float(attrs["min"]), float(attrs["max"]))
    elif kind == "HardSigmoid" and constant[1] is not None and constant[2] is not None:
        facts |= {
            "alpha": float(np.asarray(constant[1]).reshape(-1)[0]),
            "beta": float(np.asarray(constant[2]).reshape(-1)[0]),
        }
    elif kind == "HSigmoid":
        facts |= {"alpha": 1 / 6, "beta": 0.5}  # relu6(x + 3) / 6
    elif kind == "Swish":
        facts["beta"] = (
            float(np.asarray(constant[1]).reshape(-1)[0]) if len(inputs) > 1 and constant[1] is not None else 1.0
        )
    elif kind == "Gelu":
        facts["approximate"] = str(attrs.get("approximation_mode", "ERF")).upper() == "TANH"
    elif kind in ("Slice", "StridedSlice"):
        facts["slicing"] = _slicing(kind, attrs, constant, rank)
    return facts


def _pooling(kind: str, attrs: dict[str, Any]) -> Pooling | None:
    """A pool's window; OpenVINO has already resolved 'same' padding into pads_begin / pads_end."""
    kernel = tuple(int(k) for k in attrs.get("kernel", ()))
    if len(kernel) != 2:
        return None
    strides, begin, end = (tuple(int(v) for v in attrs[a]) for a in ("strides", "pads_begin", "pads_end"))
    dilations = tuple(int(v) for v in attrs.get("dilations", (1, 1)))
    window = Sliding(kernel, strides, begin, dilations, end)  # type: ignore[arg-type]
    ceil = str(attrs.get("rounding_type", "floor")).lower().startswith("ceil")
    return Pooling(window, ceil, kind == "MaxPool" or not attrs.get("exclude-pad", False))


def _slicing(kind: str, attrs: dict[str, Any], constant: list[np.ndarray | None], rank: int | None) -> Slicing | None:
    """A Slice's (opset 8) or StridedSlice's constant bounds; StridedSlice's masks: a set begin_mask / end_mask bit
    means the axis' start / end; a new or shrunk axis or an ellipsis is not a plain slice (None)."""
    if any(c is None for c in constant[1:4]):
        return None
    starts, ends, steps = ([int(v) for v in np.asarray(c).reshape(-1)] for c in constant[1:4])
    if kind == "Slice":
        axes = (
            [int(v) for v in np.asarray(constant[4]).reshape(-1)]
            if len(constant) > 4 and constant[4] is not None
            else list(range(len(starts)))
        )
        if len(constant) > 4 and constant[4] is None:
            return None
    else:
        if any(any(attrs.get(m, [])) for m in ("new_axis_mask", "shrink_axis_mask", "ellipsis_mask")):
            return None
        begin_mask, end_mask = list(attrs.get("begin_mask", [])), list(attrs.get("end_mask", []))
        axes = list(range(len(starts)))
        for k in axes:
            if k < len(begin_mask) and begin_mask[k]:
                starts[k] = 0 if steps[k] > 0 else -1
            if k < len(end_mask) and end_mask[k]:
                ends[k] = 2**62 if steps[k] > 0 else -(2**62)
    if rank:
        axes = [a % rank for a in axes]
    return Slicing(tuple(starts), tuple(ends), tuple(axes), tuple(steps))


def _sliding(kind: str, attrs: dict[str, Any], weight: tuple[Dim, ...] | None) -> Sliding | None:
    """A 2-D convolution's kernel, strides, start pads (resolved by OpenVINO for 'same' padding) and dilations."""
    if kind not in ("Convolution", "GroupConvolution") or weight is None:
        return None
    kernel = tuple(weight[-2:])
    if len(kernel) != 2 or len(attrs.get("strides", [])) != 2 or not all(isinstance(k, int) for k in kernel):
        return None
    strides, pads, dilations, ends = (
        tuple(int(v) for v in attrs[a]) for a in ("strides", "pads_begin", "dilations", "pads_end")
    )
    return Sliding(kernel, strides, pads, dilations, ends)  # type: ignore[arg-type]


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


class OvBuilder:
    """:class:`ovxai.graph.ops.Builder` for OpenVINO: tensors are ``ov.Output`` handles."""

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

    def node(self, op: str, inputs: Sequence[Any], outputs: int = 1, **attrs: Any) -> list[Any]:
        made = self._make(op, list(inputs), attrs)
        self._named(made)
        return [made.output(k) for k in range(outputs)]

    def _make(self, op: str, x: list[Any], a: dict[str, Any]) -> Any:
        """The opset node for an ONNX operator (see :class:`~ovxai.graph.ops.Builder` for the conventions)."""
        if op in _ELEMENTWISE:
            return _ELEMENTWISE[op](*x)
        if op == "Round":
            return opset.round(x[0], "half_to_even")  # ONNX Round's rule
        if op == "Shape":
            return opset3.shape_of(x[0], "i64")
        if op == "Slice" and "starts" in a:
            return opset8.slice(x[0], self._ints(a["starts"]), self._ints(a["ends"]), self._ints([1]))
        if op == "Slice":
            return opset8.slice(x[0], x[1], x[2], self._ints([1] * len(a["axes"])), self._ints(a["axes"]))
        if op == "Pad":
            half = len(a["pads"]) // 2
            return opset12.pad(x[0], self._ints(a["pads"][:half]), self._ints(a["pads"][half:]), "constant")
        if op == "Split":
            return opset.variadic_split(x[0], self.constant(np.array(a["axis"], np.int64)), x[1])
        if op == "ScatterElements":
            axis = self.constant(np.array(a["axis"], np.int64))
            return opset12.scatter_elements_update(x[0], x[1], x[2], axis, reduction="sum", use_init_val=True)
        if op == "ConvTranspose":
            return self._conv_transpose(x[0], x[1], a)
        if op == "Conv":
            return self._conv(x[0], x[1], a)
        if op == "Concat":
            return opset.concat(x, a["axis"])
        if op == "Cast":
            return opset.convert(x[0], _OV_TYPES[a["to"]])
        if op == "Range":
            return opset4.range(*x, "i64")
        if op == "Reshape":
            return opset.reshape(x[0], x[1], special_zero=False)
        if op == "Unsqueeze":
            return opset.unsqueeze(x[0], self._ints(a["axes"]))
        if op == "Transpose":
            return opset.transpose(x[0], self._ints(a["perm"]))
        if op == "MatMul":
            return opset.matmul(x[0], x[1], False, False)
        if op == "Expand":
            return opset3.broadcast(x[0], x[1], broadcast_spec="BIDIRECTIONAL")  # ONNX Expand
        if op == "Where":
            return opset.select(*x)
        if op == "Softmax":
            return opset8.softmax(x[0], a["axis"])
        if op in _REDUCTIONS:
            return _REDUCTIONS[op](x[0], self._ints(a["axes"]), keep_dims=bool(a["keepdims"]))
        if op == "TopK":
            mode = "max" if a["largest"] else "min"
            return opset11.topk(x[0], self.constant(np.array(a["k"], np.int64)), a["axis"], mode, "value", "i64")
        if op == "Gather":
            return opset8.gather(x[0], x[1], self.constant(np.array(a["axis"], np.int64)))
        if op == "GatherElements":
            return opset6.gather_elements(x[0], x[1], a["axis"])
        raise NotImplementedError(f"ovxai emits no OpenVINO node for ONNX {op}")

    def _ints(self, values: Sequence[int]) -> Any:
        return self.constant(np.array(values, dtype=np.int64))

    def _conv(self, x: Any, weight: Any, a: dict[str, Any]) -> Any:
        """ONNX Conv: Convolution, or GroupConvolution with the weight split into groups."""
        pads = list(a["pads"])
        args = (a["strides"], pads[:2], pads[2:], a["dilations"], "explicit")
        if a["group"] == 1:
            return opset.convolution(x, weight, *args)
        per_out, per_in, kh, kw = (d.get_length() for d in weight.get_partial_shape())
        grouped = opset.reshape(weight, self._ints([a["group"], per_out // a["group"], per_in, kh, kw]), False)
        return opset.group_convolution(x, grouped, *args)

    def _conv_transpose(self, x: Any, weight: Any, a: dict[str, Any]) -> Any:
        """ONNX ConvTranspose: ConvolutionBackpropData, or its group form with the weight split into groups."""
        pads = list(a["pads"])
        args = (a["strides"], None, pads[:2], pads[2:], a["dilations"], "explicit", a["output_padding"])
        if a["group"] == 1:
            return opset.convolution_backprop_data(x, weight, *args)
        per_in, per_out, kh, kw = (d.get_length() for d in weight.get_partial_shape())
        grouped = opset.reshape(weight, self._ints([a["group"], per_in // a["group"], per_out, kh, kw]), False)
        return opset.group_convolution_backprop_data(x, grouped, *args)

    def constant(self, value: np.ndarray) -> Any:
        return self._named(opset.constant(value))

    def tensor(self, name: str) -> Any:
        return self.by_id[name]

    def dtype(self, name: str) -> str:
        return str(np.dtype(self.by_id[name].get_element_type().to_dtype()).name)

    def stored(self, name: str) -> tuple[np.ndarray, str | None] | None:
        source = self.by_id[name]
        producer = source.get_node()
        if producer.get_type_name() == "Convert" and _is_constant(producer.input_value(0)):  # FP16 weights
            data = producer.input_value(0).get_node().get_data()
            return data, str(np.dtype(source.get_element_type().to_dtype()).name)
        return (producer.get_data(), None) if _is_constant(source) else None

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

    def indices(self, node: Node, x: Any = None) -> Any:
        """The original MaxPool's own indices output (opset 8 over the whole tensor, as ONNX); for an opset 1
        MaxPool, which has none, or for ``x``, those of an opset 8 twin of the pool."""
        op = node.handle
        attrs = op.get_attributes()
        own = len(op.outputs()) > 1 and attrs.get("axis", 0) == 0 and attrs.get("index_element_type") == "i64"
        if x is None and own:
            return op.output(1)
        source = op.input_value(0) if x is None else x
        twin = opset8.max_pool(
            source, attrs["strides"], attrs.get("dilations", [1, 1]), attrs["pads_begin"], attrs["pads_end"],
            attrs["kernel"], attrs.get("rounding_type", "floor"), "explicit", "i64", 0,
        )  # fmt: skip
        self._named(twin)
        return twin.output(1)

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
