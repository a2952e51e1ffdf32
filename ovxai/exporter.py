"""``ovxai export``: patch a classifier with the explanatory hook and write ONE model file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from ovxai.errors import OvxaiError
from ovxai.formats import onnx as onnx_format
from ovxai.graph import GraphView, TailPlan, plan_tail
from ovxai.hook import SALIENCY_OUTPUT, HookOptions, ReciproCamHook
from ovxai.metadata import ModelInfo
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


@dataclass
class LoadedModel:
    """A model in one of the two formats, with the adapter module that handles that format."""

    format: ModuleType  # ovxai.formats.onnx or ovxai.formats.openvino
    model: Any  # onnx.ModelProto or openvino.Model

    @property
    def is_ir(self) -> bool:
        return self.format is not onnx_format


def export(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    layer: str | None = None,
    options: HookOptions | None = None,
    input_shape: Sequence[int | str] | None = None,
    prediction: str | None = None,
    static_batch: int | None = None,
    dynamic_size: bool = False,
    fp16: bool = True,
    info: ModelInfo | None = None,
) -> ExportResult:
    """Write ``output`` (.onnx or .xml): the model plus a ``saliency_map`` output of shape (B, K, H, W).

    ``model`` is ONNX (.onnx) or OpenVINO IR (.xml + .bin). ``layer`` is a PyTorch module path
    (``layer4``), a node or tensor name, or ``None`` for the last spatial feature map feeding the
    classifier. ``static_batch`` fixes every shape (for the NPU); ``dynamic_size`` frees the input's
    height and width (the hook's masks are always built from the runtime shape, so the patched model
    explains any size the original network accepts). IR weights are stored in FP16 unless ``fp16``
    is False. ``info`` (labels, mean/scale, RGB) is written as model metadata in
    OpenVINO Model API's format. The input is never modified, and nothing is left at ``output``
    unless the whole export succeeded.
    """
    options = options or HookOptions()
    info = replace(info or ModelInfo(), score=options.score)
    source, destination = _checked_paths(Path(model), Path(output))
    with _scratch_folder(destination) as scratch:  # made first: an unwritable folder fails fast
        loaded = load_model(source, input_shape, static_batch, dynamic_size)
        graph = loaded.format.view(loaded.model)
        _refuse_patched(graph, source)
        prediction = pick_prediction(graph, prediction)
        target = resolve(graph, prediction, layer)
        plan = plan_tail(graph, target.tensor, prediction)
        info.check(_num_classes(graph, prediction))
        try:
            written = _patch_and_save(loaded, graph, plan, options, scratch / destination.name, fp16, info)
        except OSError as exc:
            raise _write_error(destination, exc) from None
        files = _move_into_place(written, destination)
    return ExportResult(files, target, prediction, options.fast_path and plan.pool is not None, options)


def load_model(
    source: Path,
    input_shape: Sequence[int | str] | None = None,
    static_batch: int | None = None,
    dynamic_size: bool = False,
) -> LoadedModel:
    """The model as the hook sees it: batch dynamic unless pinned, input shape pinned if asked."""
    if not source.is_file():
        raise OvxaiError(f"model file '{source}' not found", "check the --model path")
    if source.suffix.lower() == ".xml":
        from ovxai.formats import openvino as ov_format

        loaded = LoadedModel(ov_format, ov_format.load(source))
    else:
        loaded = LoadedModel(onnx_format, onnx_format.load(source))
    fmt, proto = loaded.format, loaded.model
    current = fmt.input_dims(proto)
    shape = list(input_shape) if input_shape is not None else None
    if dynamic_size:
        shape = [*(shape or current)[:2], "height", "width"]
    if static_batch is not None:
        shape = [static_batch, *(shape or current)[1:]]
        if not all(isinstance(d, int) for d in shape):
            raise OvxaiError(
                f"--static-batch needs every input dimension fixed, the input is {_dims(shape)}",
                "pin them with --input-shape, e.g. 1,3,224,224",
            )
    if shape is None or shape[0] != current[0]:
        fmt.make_batch_dynamic(proto)  # also frees a batch size baked into Reshape targets
    if shape is not None:
        fmt.set_input_shape(proto, shape)
    return loaded


def _dims(shape: Sequence[int | str]) -> str:
    return ",".join(str(d) if isinstance(d, int) else "?" for d in shape)


def _num_classes(graph: GraphView, prediction: str) -> int | None:
    shape = graph.tensor(prediction).shape
    return shape[1] if shape and len(shape) > 1 and isinstance(shape[1], int) else None


def _patch_and_save(
    loaded: LoadedModel, graph: GraphView, plan: TailPlan, options: HookOptions, path: Path, fp16: bool, info: ModelInfo
) -> list[Path]:
    """Add the hook and write the model into the scratch folder; returns the files written."""
    if loaded.is_ir:
        ops = loaded.format.OvOps(loaded.model, graph)
        ReciproCamHook(ops, graph, plan, options).build()
        return loaded.format.save(ops.apply(), path, fp16, info)
    ops = onnx_format.OnnxOps(loaded.model, graph)
    ReciproCamHook(ops, graph, plan, options).build()
    onnx_files = _save_onnx(ops.apply(info), path.with_suffix(".onnx"))
    if path.suffix.lower() != ".xml":
        return onnx_files
    from ovxai.formats import openvino as ov_format

    return ov_format.save(ov_format.convert_onnx(onnx_files[0]), path, fp16, info)


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
    if source.suffix.lower() not in (".onnx", ".xml"):
        raise OvxaiError(f"'{source}' is neither ONNX (.onnx) nor OpenVINO IR (.xml)", "export the model first")
    if source.suffix.lower() == ".xml" and destination.suffix.lower() != ".xml":
        raise OvxaiError("an OpenVINO IR input gives an IR output", f"use --output {destination.with_suffix('.xml')}")
    if destination.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OvxaiError(f"output '{destination}' must end in .onnx or .xml", "e.g. --output model_xai.xml")
    if destination.resolve() == source.resolve():
        raise OvxaiError("the output path is the input model", "write the patched model to a new file")
    if not destination.parent.is_dir():
        raise OvxaiError(f"output folder '{destination.parent}' does not exist", "create it first")
    return source, destination


def _refuse_patched(graph: GraphView, source: Path) -> None:
    if SALIENCY_OUTPUT in graph.outputs or SALIENCY_OUTPUT in graph.aliases:
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


def _write_error(destination: Path, exc: OSError) -> OvxaiError:
    return OvxaiError(f"could not write '{destination}': {exc.strerror or exc}", "check the disk space")


def _move_into_place(written: list[Path], destination: Path) -> list[Path]:
    """Move the checked files from the scratch folder next to ``destination``, the model file last."""
    final = [destination.parent / f.name for f in written]
    try:
        for src, dst in sorted(zip(written, final, strict=True), key=lambda p: p[1].suffix in OUTPUT_SUFFIXES):
            os.replace(src, dst)  # same file system: atomic, and a reader never sees a model without weights
    except OSError as exc:
        raise _write_error(destination, exc) from None
    return final


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
