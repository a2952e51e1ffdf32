"""``ovxai export``: patch a classifier with the explanatory hook and write ONE model file.

The pipeline talks to graph formats only through :class:`ovxai.formats.Format`; what to do with
a model (its input shape, freeing its batch, where the hook goes) is decided on the format-neutral
view. Guarantees: the input files are never written to, and nothing appears at ``output`` unless
the whole export succeeded, including a run of the written model beside the original in its format's
engine (OpenVINO: f32 and the plugin's default precision) whose prediction must be the original's bit
for bit; where it is not, the hook is built again on its own copy of the network, and checked again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ovxai.conventions import SALIENCY_OUTPUT
from ovxai.errors import OvxaiError, engine_reason
from ovxai.formats import Format, format_for
from ovxai.graph.batch import plan_free_batch
from ovxai.graph.ops import Ops
from ovxai.graph.view import GraphView
from ovxai.hook.gradient.hook import GradientCamHook, plan_gradient
from ovxai.hook.options import HookOptions
from ovxai.hook.paths import CNN_PATHS, VIT_PATHS, Choice, choose
from ovxai.hook.private_reads import PrivateReads
from ovxai.hook.recipro import ReciproCamHook
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import Candidate, pick_prediction, resolve
from ovxai.hook.tokens import plan_tokens
from ovxai.hook.vit import ViTReciproCamHook
from ovxai.metadata import ModelInfo

SMOKE_SIZE = 224  # height and width of the synthetic check input where the model leaves them dynamic
_PRECISION_NAMES = {23: "f32", 10: "f16", 7: "bf16"}  # by mantissa bits


@dataclass(frozen=True)
class ExportResult:
    """What was written and where the hook was placed."""

    files: list[Path]
    target: Candidate
    prediction: str
    options: HookOptions
    path: str  # Recipro-CAM's copies: "mean", "linear", "windows", "tokens" or "mosaic" (hook.paths); "backward"
    grid: tuple[int, int] | None = None  # a vision transformer's patch grid (its target is a block's input tokens)
    declined: tuple[tuple[str, str], ...] = ()  # the exact paths tried first, with why each did not apply

    @property
    def fast_path(self) -> bool:
        """An exact shortcut (closed form, windows, short sequence) replaced the mosaic."""
        return self.path != "mosaic"

    @property
    def baseline(self) -> tuple[float, ...] | None:
        """Integrated Grad-CAM's black image in the network's input, per channel (None for the other methods)."""
        if self.options.method != "integrated-gradcam" or self.info is None:
            return None
        return black_image(self.info)

    info: ModelInfo | None = None  # what the model records about itself (its metadata)
    reads: Reads = "shared"  # what the hook reads of the original path (see READS)


Reads = Literal["shared", "private", "whole"]
# What the hook reads of the original path, tried in this order until the prediction is the original's bit for bit:
# the original activations themselves (the cheapest); private copies of them, recomputed from the last weighted
# nodes (where reading an activation changes how the engine compiles its producer); a copy of the whole network.
# See ovxai.hook.private_reads.
READS: tuple[Reads, ...] = ("shared", "private", "whole")


@dataclass
class LoadedModel:
    """A model as the hook sees it: the format's own object, its adapter and its view."""

    format: Format
    model: Any
    graph: GraphView


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
    classifier. ``input_shape`` pins the image input (ints) or frees dimensions (names);
    ``static_batch`` fixes every shape (for the NPU); ``dynamic_size`` frees the input's height and
    width (the hook's masks are always built from the runtime shape, so the patched model explains
    any size the original network accepts). IR weights are stored in FP16 unless ``fp16`` is False.
    ``info`` (labels, mean/scale, channel order) is written as model metadata in OpenVINO Model
    API's layout, with the hook's method and score convention. ``options.method`` picks Recipro-CAM (masked copies of
    the tail) or a gradient CAM (the tail's backward in the graph); Integrated Grad-CAM's black image follows from
    the recorded mean and scale, which it therefore needs.
    """
    options = options or HookOptions()
    source, destination = Path(model), Path(output)
    output_format = _checked_paths(source, destination)
    with _scratch_folder(destination) as scratch:  # made first: an unwritable folder fails fast
        original = Original()  # written and run once: every try is checked against the same predictions
        for reads in READS:
            try:
                result = _export_once(
                    source, destination, output_format, scratch, original, reads, layer, options, input_shape,
                    prediction, static_batch, dynamic_size, fp16, info,
                )  # fmt: skip
                break
            except PredictionMoved:  # try again with the hook reading less of the original path
                if reads == READS[-1]:
                    raise
        files = _move_into_place(result.files, destination)
    return replace(result, files=files)


@dataclass
class Original:
    """The original model as written for the check (:func:`_reference_copy`) and its prediction on the check's
    batch in each precision."""

    path: Path | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


class PredictionMoved(OvxaiError):
    """The patched model's prediction is not the original's (see :func:`_check_runs`)."""


def _export_once(
    source: Path,
    destination: Path,
    output_format: Format,
    scratch: Path,
    original: Original,
    reads: Reads,
    layer: str | None,
    options: HookOptions,
    input_shape: Sequence[int | str] | None,
    prediction: str | None,
    static_batch: int | None,
    dynamic_size: bool,
    fp16: bool,
    info: ModelInfo | None,
) -> ExportResult:
    """One export into ``scratch``, checked; ``reads``: what the hook reads of the original path (:data:`READS`).
    The result's files are in ``scratch``."""
    loaded = load_model(source, input_shape, static_batch, dynamic_size)
    graph, source_format = loaded.graph, loaded.format
    prediction = pick_prediction(graph, prediction)
    tokens = plan_tokens(graph, prediction, layer)
    choice: Choice[Any] | None = None
    if tokens is None:
        target = resolve(graph, prediction, layer)
        tail = plan_tail(graph, target.tensor, prediction)
        if options.gradient:
            plan_gradient(graph, tail, options)  # the refusal of an op it cannot differentiate, before any work
        else:
            choice = choose(CNN_PATHS, graph, tail, options)
    elif options.gradient:
        raise OvxaiError(
            f"method={options.method} weights a CNN's feature map by its gradient; '{tokens.block}' is a "
            "transformer block",
            "use method=recipro (ViT-ReciproCAM) for a vision transformer",
        )
    else:
        target = Candidate(tokens.block, tokens.target, graph.tensor(tokens.target).shape or ())
        choice = choose(VIT_PATHS, graph, tokens, options)
    info = (info or ModelInfo()).replace(
        score=options.score, probabilities=_ends_in_probabilities(graph, prediction), explained=options.explain,
        method=options.method, steps=options.step_count if options.method == "integrated-gradcam" else None,
    )  # fmt: skip
    classes = _num_classes(graph, prediction)
    info.check(classes)
    _check_explained(options, classes)
    baseline = _baseline(info, graph) if options.method == "integrated-gradcam" else (0.0,)
    if original.path is None:
        original.path = _reference_copy(loaded, output_format, scratch, fp16)
    builder = source_format.builder(loaded.model, graph)
    if reads != "shared":
        builder = PrivateReads(builder, graph, whole=reads == "whole")
    if options.gradient:
        GradientCamHook(Ops(builder), graph, tail, options, baseline).build()
    elif tokens is None:
        assert choice is not None
        ReciproCamHook(Ops(builder), graph, tail, options, choice).build()
    else:
        assert choice is not None
        ViTReciproCamHook(Ops(builder), graph, tokens, options, choice).build()
    patched = builder.finish()
    try:
        if output_format is not source_format:
            patched = output_format.convert(
                source_format.save(patched, scratch / f"hooked{source_format.suffix}", False)[0]
            )
        output_format.set_metadata(patched, info.entries())
        written = output_format.save(patched, scratch / destination.name, fp16)
    except OSError as exc:
        raise _write_error(destination, exc) from None
    path = "backward" if choice is None else choice.name
    _check_runs(output_format, written[0], graph, original, prediction, path)
    grid = None if tokens is None else tokens.grid
    declined = () if choice is None else choice.declined
    return ExportResult(written, target, prediction, options, path, grid, declined, info, reads)


def _baseline(info: ModelInfo, graph: GraphView) -> tuple[float, ...]:
    """The black image per channel of the network's input."""
    black = black_image(info)
    channels = graph.input_dims()[1] if len(graph.input_dims()) > 1 else None
    if channels == 1 and len(set(black)) == 1:
        return black[:1]
    if isinstance(channels, int) and channels != len(black):
        raise OvxaiError(
            f"the mean and scale give {len(black)} channels but the network's input has {channels}",
            "give one mean= and scale= value per input channel",
        )
    return black


def black_image(info: ModelInfo) -> tuple[float, ...]:
    """A black image (pixels 0) in the network's input: -mean / scale per channel, from the recorded preprocessing
    (one of the two alone takes the other's neutral value, as the runtime does)."""
    if info.mean is None and info.scale is None:
        raise OvxaiError(
            "method=integrated-gradcam integrates from a black image, which depends on the network's preprocessing, "
            "and none is recorded",
            "give mean= and scale= (mean=0 scale=1 for a network that takes 0..255 pixels)",
        )
    mean, scale = info.mean or (0.0,) * 3, info.scale or (1.0,) * 3
    return tuple(-m / s for m, s in zip(mean, scale, strict=True))


def load_model(
    source: Path,
    input_shape: Sequence[int | str] | None = None,
    static_batch: int | None = None,
    dynamic_size: bool = False,
) -> LoadedModel:
    """The model with its input as asked: batch dynamic unless pinned, dimensions pinned or freed."""
    if not source.is_file():
        raise OvxaiError(f"model file '{source}' not found", "check the model= path")
    fmt = format_for(source)
    model = fmt.load(source)
    graph = fmt.view(model)
    image = graph.image_input()
    current = [d if d is not None else f"dim{i}" for i, d in enumerate(graph.input_dims())]
    if input_shape is None and (not current or (len(current) == 4 and not isinstance(current[1], int))):
        shown = f"[{_dims(current)}]" if current else "of unknown rank"
        raise OvxaiError(
            f"the image input '{image}' is {shown}: its channels and size are unknown",
            "give the shape it takes with input_shape=?,3,224,224 (the network's own channels and size)",
        )
    if not current:  # unknown rank: the given shape says it
        current = [f"dim{i}" for i in range(len(input_shape or ()))]
    shape = _wanted_shape(current, input_shape, static_batch, dynamic_size)
    if shape != current:
        if isinstance(current[0], int) and not isinstance(shape[0], int):
            fmt.rewrite_reshapes(model, plan_free_batch(graph))  # batch sizes baked into Reshape targets
        fmt.set_input_shape(model, image, shape)
    # With its final input shape, the model's static shape arithmetic becomes constants: every tool's
    # spelling of the same network gives the same view (and the engine no early shapes to reuse).
    fmt.fold_static_shapes(model)
    graph = fmt.view(model)
    if shape == current:
        return LoadedModel(fmt, model, graph)
    if isinstance(current[0], int) and not isinstance(shape[0], int):
        for out in graph.outputs:
            dims = graph.tensor(out).shape
            if dims and dims[0] == current[0]:
                raise OvxaiError(f"output '{out}' keeps the fixed batch {current[0]}", "re-export with a dynamic batch")
    return LoadedModel(fmt, model, graph)


def _wanted_shape(
    current: list[int | str], input_shape: Sequence[int | str] | None, static_batch: int | None, dynamic_size: bool
) -> list[int | str]:
    """The image input's dimensions after the options; validated here, before any work."""
    if static_batch is not None and (isinstance(static_batch, bool) or not isinstance(static_batch, int)):
        raise OvxaiError(f"static_batch={static_batch!r} is not a whole number", "e.g. static_batch=1")
    if static_batch is not None and static_batch < 1:
        raise OvxaiError(f"static_batch={static_batch} asks for no image", "use 1 or more")
    shape = list(input_shape) if input_shape is not None else list(current)
    if len(shape) != len(current):
        raise OvxaiError(
            f"input_shape= has {len(shape)} dimensions, the image input {len(current)} ({_dims(current)})",
            "give one value per dimension, e.g. input_shape=?,3,224,224",
        )
    for i, (want, have) in enumerate(zip(shape, current, strict=True)):
        if isinstance(want, int) and want < 1:
            raise OvxaiError(f"input_shape= dimension {i} is {want}", "use positive sizes, or ? for a dynamic one")
        if i == 1 and isinstance(want, int) and isinstance(have, int) and want != have:
            raise OvxaiError(
                f"input_shape= gives {want} channels but the network takes {have}", f"use input_shape=?,{have},H,W"
            )
    if input_shape is None and isinstance(current[0], int):
        shape[0] = "batch"  # a batch fixed at export time becomes dynamic unless pinned
    if dynamic_size:
        shape[2:] = ["height", "width"]
    if static_batch is not None:
        shape[0] = static_batch
        if not all(isinstance(d, int) for d in shape):
            raise OvxaiError(
                f"static_batch= needs every input dimension fixed, the input is {_dims(shape)}",
                "pin them with input_shape=, e.g. 1,3,224,224",
            )
    return shape


def _dims(shape: Sequence[int | str | None]) -> str:
    return ",".join(str(d) if isinstance(d, int) else "?" for d in shape)


def _num_classes(graph: GraphView, prediction: str) -> int | None:
    shape = graph.tensor(prediction).shape
    return shape[1] if shape and len(shape) > 1 and isinstance(shape[1], int) else None


def _check_explained(options: HookOptions, classes: int | None) -> None:
    selection = options.selection
    if classes is None or selection.every:
        return
    if selection.top is not None and selection.top > classes:
        raise OvxaiError(
            f"explain=top{selection.top} asks for more classes than the model's {classes}", f"use top1..top{classes}"
        )
    if selection.ids is not None and max(selection.ids) >= classes:
        raise OvxaiError(
            f"explain= class id {max(selection.ids)} is out of range", f"the model has classes 0..{classes - 1}"
        )


def _ends_in_probabilities(graph: GraphView, prediction: str) -> bool:
    """Whether the prediction output is already softmax / sigmoid probabilities (the runtime then keeps it)."""
    node = graph.producer.get(prediction)
    return node is not None and node.op in ("Softmax", "Sigmoid")


def _reference_copy(loaded: LoadedModel, output_format: Format, scratch: Path, fp16: bool) -> Path:
    """The model as loaded (input shape set, static shapes folded), written as the output will be: the same
    format (converted as the patched model is), the same weight compression. The patched model's prediction is
    checked against it."""
    fmt = loaded.format
    try:
        same = fmt is output_format
        path = fmt.save(loaded.model, scratch / f"original{fmt.suffix}", fp16 and same)[0]
        if not same:
            converted = output_format.convert(path)
            path = output_format.save(converted, scratch / f"original-converted{output_format.suffix}", fp16)[0]
    except OSError as exc:
        raise _write_error(scratch, exc) from None
    return path


def _check_runs(fmt: Format, path: Path, graph: GraphView, original: Original, prediction: str, hook_path: str) -> None:
    """Run the written model and the original on one synthetic batch, in the same engine, in each of its
    precisions: a model that cannot run, or whose prediction is not the original's bit for bit, is never
    delivered (the linear shortcut computes the first linear layer in another summation order: equal to
    rounding, see :func:`prediction_shift`)."""
    dims = graph.input_dims()
    shape = [d if isinstance(d, int) else (2 if i == 0 else SMOKE_SIZE) for i, d in enumerate(dims)]
    x = np.random.default_rng(0).standard_normal(shape).astype(graph.tensor(graph.image_input()).dtype or "float32")
    for precision in fmt.precisions:
        where = fmt.name
        if len(fmt.precisions) > 1:
            named = _PRECISION_NAMES.get(fmt.mantissa_bits(precision), precision)
            where += f" at its default precision ({named} here)" if precision == "default" else f" ({named})"
        try:
            outputs = fmt.smoke_run(path, x, precision)
        except Exception as exc:  # each engine raises its own types
            raise OvxaiError(
                f"the patched model does not run in {where} on a {_dims(shape)} input: {engine_reason(exc)}",
                "pick another layer= (see `ovxai inspect`); if the original model runs, please report this",
            ) from None
        maps = outputs.get(SALIENCY_OUTPUT)
        if maps is None or maps.ndim != 4 or maps.shape[0] != shape[0]:
            got = "no saliency_map" if maps is None else f"saliency_map of shape {maps.shape}"
            raise OvxaiError(f"the patched model gave {got} on a {_dims(shape)} input", "please report this")
        if not np.isfinite(maps.astype(np.float64)).all():
            raise OvxaiError("the patched model's saliency_map holds NaN or infinity", "pick another layer=")
        if precision not in original.predictions:
            assert original.path is not None
            try:
                original.predictions[precision] = fmt.smoke_run(original.path, x, precision)[prediction]
            except Exception as exc:
                raise OvxaiError(
                    f"the original model does not run in {where} on a {_dims(shape)} input: {engine_reason(exc)}",
                    "give the input shape it takes with input_shape=",
                ) from None
        expected = original.predictions[precision]
        reordered = fmt.mantissa_bits(precision) if hook_path == "linear" else None
        moved = prediction_shift(outputs[prediction], expected, reordered)
        if moved is not None:
            raise PredictionMoved(
                f"with the hook, {where} computes the prediction '{prediction}' differently: it moves by up to "
                f"{moved:.3g} against the original model's: the engine compiles the original path otherwise when "
                "the hook reads it; nothing was written",
                "try another layer= (the fix is ours: please report this model)",
            )


def prediction_shift(got: np.ndarray, expected: np.ndarray, reordered: int | None) -> float | None:
    """How far the patched prediction moved from the original's, or None where it did not move.

    Bit for bit, except after the linear shortcut (``reordered``: the mantissa bits the engine computes with):
    its original output is the sum of the N per-position products, the same multiply-adds in another order,
    which moves a value by a few units in the last place of the partial sums. Allowed there:
    2^-(mantissa bits - 4) of the output's largest magnitude (float32: 1.9e-6).
    """
    if got.shape != expected.shape:
        return float("inf")
    if np.array_equal(got, expected, equal_nan=True):
        return None
    difference = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
    if reordered is not None and difference <= 2.0 ** -(reordered - 4) * float(np.abs(expected).max()):
        return None
    return difference


def _checked_paths(source: Path, destination: Path) -> Format:
    """Validate the paths before any work (the output may never be, or share a file with, the input);
    the output's format."""
    if not source.is_file():
        raise OvxaiError(f"model file '{source}' not found", "check the model= path")
    if destination.is_dir():
        raise OvxaiError(
            f"output '{destination}' is a folder", f"name a file in it, e.g. {destination / 'model_xai.xml'}"
        )
    source_format = format_for(source)
    output_format = format_for(destination, "output")
    if source_format.suffix == ".xml" and output_format.suffix != ".xml":
        raise OvxaiError("an OpenVINO IR input gives an IR output", f"use output={destination.with_suffix('.xml')}")
    if not destination.parent.is_dir():
        raise OvxaiError(f"output folder '{destination.parent}' does not exist", "create it first")
    inputs = _model_files(source)
    for written in _model_files(destination):
        if any(_same_file(written, existing) for existing in inputs):
            raise OvxaiError(
                f"writing '{destination}' would overwrite the input '{source}' ('{written.name}' is one of its files)",
                "write the patched model to a new file name",
            )
    return output_format


def _model_files(path: Path) -> list[Path]:
    """The files a model occupies: IR .xml + .bin, ONNX + its external data."""
    if path.suffix.lower() == ".xml":
        return [path, path.with_suffix(".bin")]
    return [path, path.with_name(path.name + ".data")]


def _same_file(a: Path, b: Path) -> bool:
    """True for one file reached by two names: links, case-insensitive file systems, '..' segments."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


@contextmanager
def _scratch_folder(destination: Path) -> Iterator[Path]:
    """A hidden folder beside the output; whatever is left in it is removed, success or not."""
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".ovxai-", dir=destination.parent))
    except OSError as exc:
        raise OvxaiError(
            f"output folder '{destination.parent}' is not writable ({exc.strerror or exc})", "choose another output"
        ) from None
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_error(destination: Path, exc: OSError) -> OvxaiError:
    fix = "free some disk space" if exc.errno == 28 else "check the output path and its folder's permissions"
    return OvxaiError(f"could not write '{destination}': {exc.strerror or exc}", fix)


def _move_into_place(written: list[Path], destination: Path) -> list[Path]:
    """Move the checked files from the scratch folder next to ``destination``, the model file last."""
    final = [destination.parent / f.name for f in written]
    try:
        for src, dst in sorted(zip(written, final, strict=True), key=lambda p: p[1] == destination):
            os.replace(src, dst)  # same file system: atomic, and a reader never sees a model without weights
    except OSError as exc:
        raise _write_error(destination, exc) from None
    return final
