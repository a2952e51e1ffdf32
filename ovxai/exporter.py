"""``ovxai export``: patch a classifier with the explanatory hook and write ONE model file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx

from ovxai.errors import OvxaiError
from ovxai.formats import onnx as onnx_format
from ovxai.graph import GraphView, TailPlan, plan_tail
from ovxai.hook import SALIENCY_OUTPUT, HookOptions, ReciproCamHook
from ovxai.target import Candidate, is_feature_map, resolve

OUTPUT_SUFFIXES = (".onnx", ".xml")
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # bytes of weights; protobuf cannot hold 2 GB


@dataclass(frozen=True)
class ExportResult:
    """What was written and where the hook was placed."""

    files: list[Path]
    target: Candidate
    prediction: str
    fast_path: bool
    options: HookOptions


def export(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    layer: str | None = None,
    options: HookOptions | None = None,
    input_shape: Sequence[int | str] | None = None,
    prediction: str | None = None,
) -> ExportResult:
    """Write ``output`` (.onnx or .xml): the model plus a ``saliency_map`` output of shape (B, K, H, W).

    ``layer`` is a PyTorch module path (``layer4``), an ONNX node or tensor name, or ``None`` for the
    last spatial feature map feeding the classifier. The input file is never modified, and nothing
    is left at ``output`` unless the whole export succeeded.
    """
    options = options or HookOptions()
    source, destination = _checked_paths(Path(model), Path(output))
    with _scratch_folder(destination) as scratch:  # made first: an unwritable folder fails fast
        proto = load_model(source, input_shape)
        _refuse_patched(proto, source)
        graph = onnx_format.view(proto)
        prediction = pick_prediction(graph, prediction)
        target = resolve(graph, prediction, layer)
        plan = plan_tail(graph, target.tensor, prediction)
        patched = patch(proto, graph, plan, options)
        files = _write(patched, destination, scratch)
    return ExportResult(files, target, prediction, options.fast_path and plan.pool is not None, options)


def load_model(source: Path, input_shape: Sequence[int | str] | None = None) -> onnx.ModelProto:
    """The model as the hook sees it: input shape pinned if asked, batch dynamic unless pinned."""
    if not source.is_file():
        raise OvxaiError(f"model file '{source}' not found", "check the --model path")
    proto = onnx_format.load(source)
    if input_shape is not None:
        onnx_format.set_input_shape(proto, input_shape)
    if input_shape is None or not isinstance(input_shape[0], int):
        onnx_format.make_batch_dynamic(proto)
    return proto


def patch(model: onnx.ModelProto, graph: GraphView, plan: TailPlan, options: HookOptions) -> onnx.ModelProto:
    """Append the hook to ``model`` (in place) and declare the ``saliency_map`` output."""
    ops = onnx_format.OnnxOps(model, graph)
    ReciproCamHook(ops, graph, plan, options).build()
    t_shape = graph.tensor(plan.target).shape or (None,) * 4
    pred_shape = graph.tensor(plan.prediction).shape or (None, None)
    dims = [t_shape[0] or "batch", pred_shape[1], t_shape[2], t_shape[3]]
    elem = onnx.TensorProto.FLOAT if options.saliency_dtype == "float32" else onnx.TensorProto.UINT8
    return ops.apply(SALIENCY_OUTPUT, elem, dims)


def pick_prediction(graph: GraphView, name: str | None) -> str:
    """The classification output: a float (B, K) tensor (trailing 1s allowed) computed from a feature map."""
    if name is not None:
        if name not in graph.outputs:
            raise OvxaiError(f"'{name}' is not an output of the model", f"choose one of: {', '.join(graph.outputs)}")
        return name
    found = [o for o in graph.outputs if _is_scores(graph, o)]
    if len(found) == 1:
        return found[0]
    if not found:
        shapes = ", ".join(f"{o} ({graph.tensor(o).describe()})" for o in graph.outputs)
        raise OvxaiError(
            f"no classification output (B, K) computed from a 4-D feature map among the outputs: {shapes}",
            "export a CNN classifier, or name its score output with --prediction",
        )
    raise OvxaiError(f"several outputs look like class scores: {', '.join(found)}", "pick one with --prediction")


def _is_scores(graph: GraphView, name: str) -> bool:
    t = graph.tensor(name)
    if not t.is_float or t.shape is None or len(t.shape) < 2 or any(d != 1 for d in t.shape[2:]):
        return False
    feeding = graph.ancestors([name])
    return any(is_feature_map(graph, o) for n in graph.nodes if n.name in feeding for o in n.outputs)


def _checked_paths(source: Path, destination: Path) -> tuple[Path, Path]:
    if not source.is_file():
        raise OvxaiError(f"model file '{source}' not found", "check the --model path")
    if source.suffix.lower() != ".onnx":
        raise OvxaiError(f"'{source}' is not an .onnx file", "export the model to ONNX first")
    if destination.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OvxaiError(f"output '{destination}' must end in .onnx or .xml", "e.g. --output model_xai.xml")
    if destination.resolve() == source.resolve():
        raise OvxaiError("the output path is the input model", "write the patched model to a new file")
    if not destination.parent.is_dir():
        raise OvxaiError(f"output folder '{destination.parent}' does not exist", "create it first")
    return source, destination


def _refuse_patched(model: onnx.ModelProto, source: Path) -> None:
    names = {o.name for o in model.graph.output} | {n.name for n in model.graph.node}
    if SALIENCY_OUTPUT in names or any(n.startswith(onnx_format.PREFIX) for n in names):
        raise OvxaiError(f"'{source}' already has a '{SALIENCY_OUTPUT}' output", "export from the original model")


@contextmanager
def _scratch_folder(destination: Path) -> Iterator[Path]:
    """A hidden folder beside the output; whatever is left in it is removed, success or not."""
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".ovxai-", dir=destination.parent))
    except OSError as exc:
        raise OvxaiError(
            f"output folder '{destination.parent}' is not writable ({exc.strerror or exc})", "choose another --output"
        ) from None
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write(model: onnx.ModelProto, destination: Path, scratch: Path) -> list[Path]:
    """Write and check in ``scratch``, then move into place: no half-written model is ever visible."""
    try:
        onnx_path = scratch / destination.with_suffix(".onnx").name
        written = _save_onnx(model, onnx_path)
        if destination.suffix.lower() == ".xml":
            from ovxai.formats.openvino import save_ir_from_onnx

            written = save_ir_from_onnx(onnx_path, scratch / destination.name)
        final = [destination.parent / f.name for f in written]
        for src, dst in sorted(zip(written, final, strict=True), key=lambda p: p[1].suffix in (".onnx", ".xml")):
            os.replace(src, dst)  # the model file itself last: a reader never sees it without its weights
        return final
    except OSError as exc:
        raise OvxaiError(f"could not write '{destination}': {exc.strerror or exc}", "check the disk space") from None


def _save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    weights = sum(len(i.raw_data) for i in model.graph.initializer)
    if weights < _EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, os.fspath(path))
        files = [path]
    else:
        data = path.with_name(path.name + ".data")
        onnx.save_model(model, os.fspath(path), save_as_external_data=True, location=data.name, size_threshold=1024)
        files = [path, data]
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"ovxai produced an invalid ONNX model, please report: {exc}") from exc
    return files
