"""Command line: ``ovxai export``, ``ovxai inspect`` and ``ovxai explain``."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ovxai.conventions import (
    CHANNEL_ORDERS,
    GRADIENT_METHODS,
    HOOK_PATHS,
    MASKS,
    METHODS,
    SALIENCY_DTYPES,
    SALIENCY_OUTPUT,
    SCORES,
)
from ovxai.errors import OvxaiError
from ovxai.hook.options import HookOptions
from ovxai.metadata import ModelInfo

if TYPE_CHECKING:
    from PIL import Image

    from ovxai.exporter.pipeline import ExportResult
    from ovxai.graph.view import GraphView
    from ovxai.hook.paths import Choice
    from ovxai.serving.collection import CollectionOptions
    from ovxai.serving.options import ServeOptions


def _shape(text: str) -> list[int | str]:
    """'?,3,224,224' -> ['batch', 3, 224, 224]; '?' or a name keeps a dimension dynamic."""
    dims: list[int | str] = []
    for i, part in enumerate(text.replace("x", ",").split(",")):
        part = part.strip()
        if part.isdigit() and int(part) > 0:
            dims.append(int(part))
        elif part in ("?", "-1"):
            dims.append("batch" if i == 0 else f"dim{i}")
        elif part.isidentifier():
            dims.append(part)
        else:
            raise argparse.ArgumentTypeError(f"bad dimension '{part}' in '{text}' (use e.g. ?,3,224,224)")
    return dims


def _model_source(text: str) -> str | Path:
    """A model file, or the URL of a served model (kept as text: a Path would fold its '//')."""
    return text if re.match(r"(?i)https?://", text) else Path(text)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of the tool."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


# API parameter -> command-line flag: library errors name the parameter, the CLI shows the flag.
_FLAGS = {
    "path": "--path",
    "layer": "--layer",
    "input_shape": "--input-shape",
    "static_batch": "--static-batch",
    "prediction": "--prediction",
    "output": "--output",
    "model": "--model",
    "labels": "--labels",
    "mean": "--mean",
    "scale": "--scale",
    "channel_order": "--channel-order",
    "score": "--score",
    "method": "--method",
    "steps": "--steps",
    "mask": "--mask",
    "saliency_dtype": "--saliency-dtype",
    "targets": "--explain",
    "explain": "--explain",
    "top_k": "--top-k",
    "version": "--version",
    "device": "--device",
}
_PARAMETER = re.compile(r"(?<![\w-])(" + "|".join(_FLAGS) + r")= ?")


def in_cli_terms(message: str) -> str:
    """'pick one with layer=' -> 'pick one with --layer'."""
    return _PARAMETER.sub(lambda m: _FLAGS[m.group(1)] + " ", message).replace("  ", " ")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ovxai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    exp = sub.add_parser("export", help="add an in-graph saliency_map output (Recipro-CAM or a gradient CAM)")
    source = exp.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", "-m", type=Path, help="input classifier (.onnx, or .xml IR)")
    source.add_argument("--torch", metavar="MODULE:FACTORY", help="a torch classifier from a factory (needs torch)")
    exp.add_argument("--output", "-o", type=Path, help="patched model, .onnx or .xml (default: <model>_xai.onnx)")
    exp.add_argument("--layer", "-l", help="module path (layer4), node or tensor name; default: automatic")
    exp.add_argument(
        "--method",
        choices=METHODS,
        default="recipro",
        help="recipro (masked copies of the tail, default), or a gradient CAM computed by the tail's backward in "
        "the graph (see README: Choosing a method)",
    )
    exp.add_argument("--steps", type=int, help="integrated-gradcam: steps from the black image (default 20)")
    exp.add_argument(
        "--score", choices=SCORES, help="the class score mapped: softmax (recipro's default) or logits (the gradient "
        "methods' default), or sigmoid",
    )  # fmt: skip
    exp.add_argument("--mask", choices=MASKS, default=MASKS[0])
    exp.add_argument("--saliency-dtype", choices=SALIENCY_DTYPES, default=SALIENCY_DTYPES[0])
    exp.add_argument(
        "--path",
        choices=HOOK_PATHS,
        default="auto",
        help="how the copies are computed: the first exact path that applies (auto), one by name, or the general "
        "mosaic (see `ovxai inspect`)",
    )
    exp.add_argument(
        "--explain", default="all", help="classes that get a map: all (default), topK of each image, or ids 281,285"
    )
    exp.add_argument("--static-batch", type=int, metavar="N", help="fix every shape, batch N included (NPU)")
    exp.add_argument("--dynamic-size", action="store_true", help="free the input's H and W: explain any image size")
    exp.add_argument("--no-fp16", dest="fp16", action="store_false", help="keep IR weights in FP32")
    exp.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="write DIR/NAME/N/model.xml|onnx and Triton's DIR/NAME/config.pbtxt (NAME: output's stem)",
    )
    exp.add_argument(
        "--version", type=int, metavar="N", help="with --repository: the model version N (default 1; required, "
        "above every version there, when NAME holds versions already)",
    )  # fmt: skip
    meta = exp.add_argument_group("metadata written into the model (OpenVINO Model API's model_info)")
    meta.add_argument("--labels", type=Path, help="class names, one per line (line i = class i)")
    meta.add_argument("--mean", help="per-channel mean subtracted from 0..255 pixels, e.g. 123.675,116.28,103.53")
    meta.add_argument("--scale", help="per-channel divisor applied after the mean, e.g. 58.395,57.12,57.375")
    meta.add_argument("--channel-order", choices=CHANNEL_ORDERS, help="the colour order the network expects")
    _model_args(exp)

    exp2 = sub.add_parser("explain", help="predict and explain images with a patched model (no torch needed)")
    exp2.add_argument(
        "--model",
        "-m",
        type=_model_source,
        required=True,
        help="patched model (.xml or .onnx), or a served one: http://HOST:PORT/v2/models/NAME",
    )
    exp2.add_argument(
        "--image", "-i", type=Path, nargs="+", required=True,
        help="image files, folders and/or list files (.txt, .lst: one path per line, relative to the list's folder)",
    )  # fmt: skip
    exp2.add_argument("--out", "-o", type=Path, default=Path("ovxai-out"), help="folder for overlays and summary.json")
    exp2.add_argument("--device", help="OpenVINO device for a model file: CPU (default), GPU, NPU, AUTO")
    exp2.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="a served model: longest wait for each answer (default 30)"
    )
    exp2.add_argument("--backend", choices=("auto", "openvino", "onnxruntime"), default="auto")
    exp2.add_argument("--top-k", type=int, default=5, help="predictions to report per image (default 5; at most K)")
    exp2.add_argument("--explain", default="top1", help="classes to map: topK, the K best (default top1); ids: 281,285")
    exp2.add_argument("--labels", type=Path, help="class names file, if the model carries none")
    exp2.add_argument("--mean", help="per-channel mean (default: the model's; required if it has none), e.g. 0")
    exp2.add_argument("--scale", help="per-channel scale (default: the model's; required if it has none), e.g. 1")
    exp2.add_argument("--channel-order", choices=CHANNEL_ORDERS, help="default: the model's, else rgb")
    exp2.add_argument(
        "--jobs", type=int, help="inference requests in flight (default: the engine's optimal number + 1, at least 2)"
    )
    exp2.add_argument("--colormap", choices=("turbo", "jet", "gray"), default="turbo")
    exp2.add_argument("--alpha", type=float, default=0.5, help="overlay opacity from 0 to 1 (default 0.5)")
    exp2.add_argument(
        "--overlay-format",
        choices=("jpeg", "png", "webp"),
        help="overlay files: jpeg (default: the photo shows through), png (default at --alpha 1: the map alone), webp",
    )
    ray = exp2.add_argument_group("a large collection on Ray Data (pip install 'ovxai[ray]'); writes results.jsonl")
    ray.add_argument("--ray", action="store_true", help="explain with a pool of Ray actors, each with the model")
    # No defaults here (absent unless given, so that they are refused without --ray): CollectionOptions has them.
    unset = argparse.SUPPRESS
    ray.add_argument("--actors", type=int, default=unset, help="actors, each loading the model once (default 2)")
    ray.add_argument("--batch-size", type=int, default=unset, help="images per actor call (default 8)")
    ray.add_argument("--actor-cpus", type=float, default=unset, help="CPUs Ray reserves per actor (default 1)")
    ray.add_argument(
        "--address", default=unset, help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray instance)"
    )
    ray.add_argument(
        "--node-ip-address", default=unset, help="the IP of the local Ray instance's node (as ray start's flag)"
    )

    srv = sub.add_parser(
        "serve", help="serve a patched model: Open Inference Protocol (REST and gRPC), /v1/explain; Ray for replicas"
    )
    srv.add_argument("--model", "-m", type=Path, required=True, help="patched model (.xml or .onnx)")
    srv.add_argument("--name", help="the model's name in the protocol's URLs (default: the file's stem)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    srv.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0: no gRPC)")
    srv.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU, AUTO")
    srv.add_argument("--backend", choices=("auto", "openvino", "onnxruntime"), default="auto")
    srv.add_argument("--max-batch-size", type=int, default=8, help="dynamic batching: most requests per batch; 1: off")
    srv.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="dynamic batching: longest wait for company (0: the queued ones)",
    )
    srv.add_argument("--labels", type=Path, help="class names file, if the model carries none")
    srv.add_argument("--mean", help="per-channel mean (default: the model's; required if it has none), e.g. 0")
    srv.add_argument("--scale", help="per-channel scale (default: the model's; required if it has none), e.g. 1")
    srv.add_argument("--channel-order", choices=CHANNEL_ORDERS, help="default: the model's, else rgb")
    cluster = srv.add_argument_group(
        "Ray Serve: replicas and clusters (any of these serves on Ray instead of in process)"
    )
    cluster.add_argument("--replicas", type=int, default=1, help="replicas, each with the model loaded (default 1)")
    cluster.add_argument("--max-replicas", type=int, help="autoscale from --replicas up to this many")
    cluster.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS; else no Ray for one replica)")
    cluster.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica (default 1)")
    cluster.add_argument(
        "--proxy-location",
        choices=("HeadOnly", "EveryNode"),
        default="HeadOnly",
        help="where Ray Serve's proxies run (default HeadOnly: one address)",
    )
    cluster.add_argument("--node-ip-address", help="the IP of the local Ray instance's node (as ray start's flag)")

    ins = sub.add_parser("inspect", help="list the layers the hook can explain, with shapes and cost")
    ins.add_argument("--model", "-m", type=Path, required=True, help="classifier (.onnx, or .xml IR)")
    ins.add_argument("--depth", type=int, default=2, help="deepest module path level to list (default 2)")
    _model_args(ins)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", type=_shape, help="pin the image input's shape, e.g. ?,3,224,224")
    parser.add_argument("--prediction", help="name of the class-score output when there are several")


def main(argv: Sequence[str] | None = None) -> int:
    from ovxai.interrupts import Terminated, sigterm_raises

    args = _parser().parse_args(argv)
    command = {"export": _export, "inspect": _inspect, "explain": _explain, "serve": _serve}[args.command]
    try:
        if args.command != "explain":
            return command(args)
        with sigterm_raises():  # SIGTERM unwinds like Ctrl-C: requests waited for, complete results kept
            return command(args)
    except OvxaiError as exc:
        print(f"ovxai {args.command}: error: {in_cli_terms(str(exc))}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"ovxai {args.command}: terminated; stopped", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        done = "nothing was written" if args.command == "export" else "stopped"
        print(f"ovxai {args.command}: interrupted; {done}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ovxai inspect ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def _export(args: argparse.Namespace) -> int:
    if args.version is not None and args.repository is None:
        raise OvxaiError("--version applies to --repository only", "add --repository DIR, or drop --version")
    options = HookOptions(
        score=args.score, mask=args.mask, saliency_dtype=args.saliency_dtype, path=args.path, explain=args.explain,
        method=args.method, steps=args.steps,
    )  # fmt: skip
    if args.torch:
        if args.output is None or args.input_shape is None:
            raise OvxaiError("--torch needs --output and --input-shape", "e.g. --input-shape ?,3,224,224 -o m.xml")
        if len(args.input_shape) != 4:
            raise OvxaiError(
                f"--torch needs a 4-D --input-shape (B, C, H, W), got {len(args.input_shape)} dimensions",
                "e.g. --input-shape ?,3,224,224",
            )
        if args.repository is not None:
            return _export_repository(args, args.output, options, lambda path: _export_torch_file(args, options, path))
        _report(_export_torch_file(args, options, args.output), options)
        return 0
    output = args.output or args.model.with_name(f"{args.model.stem}_xai{args.model.suffix or '.onnx'}")
    if args.repository is not None:
        return _export_repository(args, output, options, lambda path: _export_file(args, options, path))
    _report(_export_file(args, options, output), options)
    return 0


def _export_file(args: argparse.Namespace, options: HookOptions, output: Path) -> ExportResult:
    from ovxai.exporter.pipeline import export

    return export(
        args.model,
        output,
        layer=args.layer,
        options=options,
        input_shape=args.input_shape,
        prediction=args.prediction,
        static_batch=args.static_batch,
        dynamic_size=args.dynamic_size,
        fp16=args.fp16,
        info=ModelInfo.from_options(args.labels, args.mean, args.scale, args.channel_order),
    )


def _export_repository(
    args: argparse.Namespace, output: Path, options: HookOptions, write: Callable[[Path], ExportResult]
) -> int:
    """``--repository DIR``: the model as ``DIR/NAME/N/model.*`` and Triton's ``DIR/NAME/config.pbtxt``."""
    from ovxai.serving.repository import CONFIG, plan, publish

    entry = plan(args.repository, output, args.version)
    with publish(entry) as path:
        result = write(path)
    final = entry.folder / str(entry.version)
    result.files[:] = [final / f.relative_to(path.parent) for f in result.files] + [entry.folder / CONFIG]
    _report(result, options)
    return 0


def _export_torch_file(args: argparse.Namespace, options: HookOptions, output: Path) -> ExportResult:
    import torch

    from ovxai.exporter.from_torch import export_torch, load_factory

    shape = [d if isinstance(d, int) else (2 if i == 0 else 224) for i, d in enumerate(args.input_shape)]
    dynamic = [not isinstance(d, int) for d in args.input_shape]
    return export_torch(
        load_factory(args.torch),
        torch.rand(*shape),
        output,
        exporter="dynamo",
        layer=args.layer,
        options=options,
        dynamic_size=dynamic[2] or dynamic[3],
        static_batch=None if dynamic[0] else shape[0],
        fp16=args.fp16,
        info=ModelInfo.from_options(args.labels, args.mean, args.scale, args.channel_order),
    )


def _report(result: ExportResult, options: HookOptions) -> None:
    t = result.target
    path = {
        "mean": "exact shortcut through the global pool",
        "linear": "exact shortcut through the linear layer",
        "windows": "exact incremental copies (each computed only where it differs from the background)",
        "tokens": "ViT-ReciproCAM, exact short sequence",
    }.get(result.path, "general path (full mosaic)" if result.grid is None else "ViT-ReciproCAM, general path")
    if result.grid is None:
        print(f"target   {t.layer} -> '{t.tensor}'  C x H x W = {t.chw}  N = {t.n or 'H*W at run time'}")
    else:
        h, w = result.grid
        print(f"target   input of block {t.layer} -> '{t.tensor}'  tokens x D = {t.chw}  grid {h} x {w}, N = {h * w}")
    if result.path == "backward":
        steps = f" in {options.step_count} steps from the black image {_floats(result.baseline)}"
        how = steps if options.method == "integrated-gradcam" else ""
        print(f"hook     {options.method}: the tail's backward in the graph{how}, score {options.score} "
              f"(differentiated), saliency {options.saliency_dtype}")  # fmt: skip
    else:
        print(f"hook     {path}, score {options.score}, mask {options.mask}, saliency {options.saliency_dtype}")
    for name, reason in result.declined:
        print(f"         (not {name}: {reason})")
    if result.reads == "private":
        print(
            "note     the engine compiled the original path otherwise when the hook read it (the prediction moved): "
            "the hook reads its own copies of the activations it needs, recomputed from the last weighted layers"
        )
    elif result.reads == "whole":
        print(
            "note     the engine compiled the original path otherwise when the hook read it, even its own copies "
            "of the activations: the hook runs on its own copy of the network, about twice the computation"
        )
    extra = " + 'feature_vector' (B, C)" if result.path in ("mean", "windows") else ""
    if not options.selection.every:  # 'ALL' is all too: the parsed choice, never the spelling
        extra += f" + 'saliency_classes' (B, K') for explain {options.explain}"
    print(f"outputs  '{result.prediction}' (unchanged) + 'saliency_map' (B, K, H, W){extra}")
    for f in result.files:
        print(f"wrote    {f}")


def _floats(values: Sequence[float] | None) -> str:
    return "" if values is None else "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _explain(args: argparse.Namespace) -> int:
    import re

    from ovxai.metadata import ModelInfo
    from ovxai.runtime import check_targets, named_image_files, parse_targets, pictures
    from ovxai.runtime.backends import is_model_url
    from ovxai.serving.collection import expand_lists

    flags = {"targets": "--explain", "top_k": "--top-k", "jobs": "--jobs", "alpha": "--alpha", "mean": "--mean",
             "scale": "--scale", "labels": "--labels", "channel_order": "--channel-order", "actors": "--actors",
             "batch_size": "--batch-size", "cpus_per_actor": "--actor-cpus", "timeout": "--timeout",
             "device": "--device"}  # fmt: skip

    def in_flags(exc: OvxaiError) -> OvxaiError:
        """The library names its parameters (``mean=``); say the flags instead."""
        text = re.sub(r"\b(\w+)=\s*", lambda m: f"{flags[m[1]]} " if m[1] in flags else m[0], str(exc))
        return type(exc)(text)

    # Every argument is checked before anything is loaded or written: an error leaves no partial output.
    try:
        targets = parse_targets(args.explain)
        check_targets(targets, None)
        if args.top_k < 1:
            raise OvxaiError(f"top_k= {args.top_k} reports no prediction", "use top_k=1 or more")
        if args.jobs is not None and args.jobs < 1:
            raise OvxaiError(f"jobs= {args.jobs} runs no request", "use jobs=1 or more")
        pictures.check_overlay(args.alpha, args.colormap)
        if is_model_url(args.model) and args.device is not None:
            raise OvxaiError("--device applies to a model file: a served model runs where its server put it",
                             "drop --device, or choose the device where the server starts")  # fmt: skip
        if not is_model_url(args.model) and args.timeout is not None:
            raise OvxaiError("--timeout applies to a served model (a URL), not to a model file", "drop --timeout")
        override = ModelInfo.from_options(labels=args.labels, mean=args.mean, scale=args.scale)
        if not args.ray:
            _no_ray_flags(args)
        collection = _collection_options(args, targets, override) if args.ray else None
    except OvxaiError as exc:
        raise in_flags(exc) from None
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise OvxaiError(f"--out '{out}' is a file", "give a folder; it is created if missing")
    parent = next(p for p in (out, *out.parents) if p.exists())
    if not parent.is_dir():
        raise OvxaiError(f"--out '{out}' lies under the file '{parent}'", "give a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OvxaiError(f"--out '{out}' cannot be written: '{parent}' is read-only", "choose a writable folder")
    names = named_image_files(expand_lists(args.image))  # file -> a unique name for its outputs
    if not names:
        raise OvxaiError("no images found in the given folders", "pass image files or folders with images")
    if collection is not None:
        return _explain_collection(args, collection, names, in_flags)
    return _explain_here(args, targets, override, names, in_flags)


def _explain_here(
    args: argparse.Namespace,
    targets: str | list[int],
    override: ModelInfo,
    names: dict[Path, str],
    in_flags: Callable[[OvxaiError], OvxaiError],
) -> int:
    """``ovxai explain`` in this process: three stages overlap, so that the engine never waits for pictures —
    images decoded ahead on a few threads (``explain_many``), the requests in flight, and each result's
    overlays drawn, encoded and written on a pool of threads (Pillow, numpy, zlib and libjpeg work without
    the GIL) while this thread hands the engine its next images."""
    import json
    import time
    from contextlib import closing

    from tqdm import tqdm

    from ovxai.runtime import Explainer, Explanation, ImageError, check_targets, pictures
    from ovxai.runtime.ahead import default_workers, map_ahead
    from ovxai.runtime.backends import is_model_url, redact

    try:
        explainer = Explainer.load(
            args.model, args.backend, args.device, labels=override.labels, mean=override.mean,
            scale=override.scale, channel_order=args.channel_order, timeout=args.timeout,
            throughput=not is_model_url(args.model),  # a folder of images: the engine's throughput setting
        )  # fmt: skip
        check_targets(targets, explainer.num_classes)
    except OvxaiError as exc:
        raise in_flags(exc) from None
    print(f"preprocessing: {explainer.describe_preprocessing()}")
    out: Path = args.out
    files = list(names)
    form = args.overlay_format or pictures.overlay_format(args.alpha)
    sheet_limit = 64  # images on the contact sheet
    print(f"maps: {explainer.method}, score {explainer.score}")
    skipped: list[dict[str, str]] = []

    def skip(item: object, exc: ImageError) -> None:
        if len(files) == 1:
            raise exc  # alone, a bad image is the error
        print(f"ovxai explain: warning: skipped {exc}", file=sys.stderr)
        skipped.append({"image": str(item), "error": str(exc)})

    def write(path: Path, data: bytes) -> str:
        try:
            out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
            pictures.write_atomically(path, data)
        except OSError as exc:
            raise OvxaiError(f"cannot write '{path}' ({exc.strerror or exc})", "check the disk and --out") from None
        return str(path)

    by_source = {str(file): name for file, name in names.items()}

    def draw(numbered: tuple[int, Explanation]) -> tuple[list[str], list[tuple[Image.Image, str]]]:
        """One result's overlays, written; thumbnails of them for the contact sheet's first images."""
        index, result = numbered
        name = by_source.get(result.source, Path(result.source).stem)
        paths, tiles = [], []
        for i, target in enumerate(result.targets):
            picture = result.overlay(i, args.alpha, args.colormap)
            path = out / f"{name}_{target.class_id}{pictures.SUFFIXES[form]}"
            paths.append(write(path, pictures.encode(picture, form)))
            if index < sheet_limit:
                tiles.append((pictures.thumbnail(picture), result.caption(i)))
        return paths, tiles

    summary: list[dict[str, object]] = []
    tiles: list[tuple[Image.Image, str]] = []
    workers = default_workers()
    start = time.perf_counter()
    # One request more than the engine's optimum: a stream never waits for this thread between two requests.
    jobs = args.jobs or max(2, explainer.session.optimal_requests + 1)
    stream = explainer.explain_many(files, targets, args.top_k, jobs=jobs, on_error=skip)
    with closing(stream), closing(map_ahead(draw, enumerate(stream), workers, 2 * workers, "ovxai-draw")) as drawing:
        for (_, result), drawn in tqdm(drawing, total=len(files), unit="image", disable=None, file=sys.stderr):
            entry = result.summary()
            entry["overlays"], some_tiles = drawn.result()
            tiles += some_tiles
            summary.append(entry)
            best = result.top[0]
            tqdm.write(f"{Path(result.source).name}: {best.label} ({best.score * 100:.1f} %)", file=sys.stdout)
    elapsed = time.perf_counter() - start
    if tiles:
        write(out / "contact_sheet.png", pictures.encode(pictures.contact_sheet(tiles), "png"))
    local = not is_model_url(args.model)
    report = {
        "model": str(args.model) if local else redact(str(args.model)),
        "device": (args.device or "CPU") if local else None,
        "preprocessing": explainer.describe_preprocessing(),
        "overlay_format": form,
        "method": explainer.method,
        "images": summary,
        "skipped": skipped,
        "total_seconds": round(elapsed, 3),
        "images_per_second": round(len(summary) / elapsed, 2) if elapsed else None,
    }
    write(out / "summary.json", json.dumps(report, indent=2).encode())
    print(f"explained {len(summary)} image(s), skipped {len(skipped)}; wrote {out / 'summary.json'}")
    return 1 if skipped else 0


_RAY_FLAGS = {"actors": "actors", "batch_size": "batch_size", "actor_cpus": "cpus_per_actor"}  # -> CollectionOptions


def _no_ray_flags(args: argparse.Namespace) -> None:
    """Without ``--ray``, its flags would be ignored without a word: refuse them."""
    given = [name for name in (*_RAY_FLAGS, "address", "node_ip_address") if name in vars(args)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise OvxaiError(f"{flag} applies to --ray only", f"add --ray, or drop {flag}")


def _collection_options(args: argparse.Namespace, targets: str | list[int], given: ModelInfo) -> CollectionOptions:
    """``--ray``: Ray Data must be there (checked before anything is loaded), then its options."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise OvxaiError("ovxai explain --ray needs Ray Data", "pip install 'ovxai[ray]'") from None
    from ovxai.runtime.pictures import overlay_format as default_format
    from ovxai.serving.collection import CollectionOptions

    overlay_format = args.overlay_format or default_format(args.alpha)
    pool = {field: getattr(args, name) for name, field in _RAY_FLAGS.items() if name in vars(args)}
    return CollectionOptions(
        str(args.model), args.device or "CPU", args.backend, labels=given.labels, mean=given.mean, scale=given.scale,
        channel_order=args.channel_order, timeout=args.timeout, targets=targets, top_k=args.top_k, alpha=args.alpha,
        colormap=args.colormap, overlay_format=overlay_format, **({"jobs": args.jobs} if args.jobs else {}), **pool,
    )  # fmt: skip


def _explain_collection(
    args: argparse.Namespace,
    options: CollectionOptions,
    names: dict[Path, str],
    in_flags: Callable[[OvxaiError], OvxaiError],
) -> int:
    """``ovxai explain --ray``: exit 0 when every image was explained, 1 when some were skipped."""
    from ovxai.serving.collection import explain_collection
    from ovxai.serving.results import RESULTS

    try:
        done = explain_collection(
            options, names, args.out, vars(args).get("address"), vars(args).get("node_ip_address")
        )
    except OvxaiError as exc:
        raise in_flags(exc) from None
    rate = f" ({done.images_per_second:.1f} images/s)" if done.new else ""
    print(f"explained {done.explained} image(s){rate}, skipped {done.skipped}; wrote {args.out / RESULTS}")
    return 1 if done.skipped else 0


def _serve(args: argparse.Namespace) -> int:
    from ovxai.serving.options import ServeOptions

    flags = {"name": "--name", "max_batch_size": "--max-batch-size", "batch_wait_ms": "--batch-wait-ms",
             "replicas": "--replicas", "max_replicas": "--max-replicas", "cpus_per_replica": "--replica-cpus",
             "mean": "--mean", "scale": "--scale", "labels": "--labels", "device": "--device",
             "channel_order": "--channel-order"}  # fmt: skip
    if not 0 < args.port < 65536:
        raise OvxaiError(f"--port {args.port} is not a TCP port", "use 1..65535, e.g. 8000")
    if not 0 <= args.grpc_port < 65536 or args.grpc_port == args.port:
        raise OvxaiError(f"--grpc-port {args.grpc_port} is not a second TCP port", "use 1..65535 (not --port), or 0")
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    try:
        given = ModelInfo.from_options(labels=args.labels, mean=args.mean, scale=args.scale)
        options = ServeOptions(
            str(args.model), args.device, args.backend, given.labels, given.mean, given.scale, args.channel_order,
            name=args.name or "", max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
            replicas=args.replicas, max_replicas=args.max_replicas, cpus_per_replica=args.replica_cpus,
        )  # fmt: skip
        on_ray = bool(address) or options.wants_ray
        if on_ray:
            _serve_on_ray(args, options, address)
        else:
            _serve_embedded(args, options)
    except OvxaiError as exc:  # the library names its parameters (max_batch_size=): say the flags
        text = re.sub(r"\b(\w+)=\s*", lambda m: f"{flags[m[1]]} " if m[1] in flags else m[0], str(exc))
        raise OvxaiError(text) from None
    print("ovxai serve: stopped", file=sys.stderr)
    return 0


def _serving(name: str, url: str, grpc: str | None, where: str) -> None:
    base = url.split("/v2/")[0]
    also = f", gRPC {grpc}" if grpc else ""
    print(f"serving {name} at {url} (POST {base}/v1/explain, GET {base}/v1/info{also}; {where})", flush=True)


def _serve_embedded(args: argparse.Namespace, options: ServeOptions) -> None:
    try:
        import uvicorn  # noqa: F401

        from ovxai.serving import embedded, grpc_service  # noqa: F401
        from ovxai.serving.handlers import Handlers
    except ImportError:
        raise OvxaiError("ovxai serve needs uvicorn, grpcio and tritonclient", "pip install 'ovxai[serve]'") from None

    def loaded(handlers: Handlers) -> None:
        print(f"preprocessing: {handlers.explainer.describe_preprocessing()}", flush=True)

    def ready(url: str, grpc: str | None) -> None:
        _serving(options.name, url, grpc, "in process")

    embedded.serve(options, args.host, args.port, args.grpc_port, ready, loaded)


def _serve_on_ray(args: argparse.Namespace, options: ServeOptions, address: str | None) -> None:
    try:
        import ray.serve  # noqa: F401

        from ovxai.serving import ray_host
        from ovxai.serving.handlers import Handlers
    except ImportError:
        raise OvxaiError("ovxai serve --replicas/--address needs Ray Serve", "pip install 'ovxai[serve]'") from None
    # Every problem of the model (missing, unpatched, no preprocessing, a device this machine lacks) is one
    # line here, before Ray starts; on a cluster the replicas' nodes may have devices this one lacks.
    from dataclasses import replace

    checked = Handlers(replace(options, device="CPU" if address else options.device))
    print(f"preprocessing: {checked.explainer.describe_preprocessing()}", flush=True)
    checked.close()
    del checked

    def ready(url: str, grpc: str | None) -> None:
        _serving(options.name, url, grpc, "Ray Serve")

    ray_host.serve_model(
        options, args.host, args.port, args.grpc_port, address, args.proxy_location, ready, args.node_ip_address
    )


def _inspect(args: argparse.Namespace) -> int:
    from ovxai.exporter.pipeline import SMOKE_SIZE, load_model
    from ovxai.graph.macs import macs
    from ovxai.hook.cost import choice_macs
    from ovxai.hook.paths import CNN_PATHS, choose, survey
    from ovxai.hook.tail import plan_tail
    from ovxai.hook.target import candidates, pick_prediction, resolve

    loaded = load_model(args.model, args.input_shape)
    if SALIENCY_OUTPUT in loaded.graph.outputs or SALIENCY_OUTPUT in loaded.graph.aliases:
        _inspect_patched(args.model, loaded.format.metadata(loaded.model))
        return 0
    dims = loaded.graph.input_dims()
    note = ""
    if args.input_shape is None and len(dims) == 4 and not all(isinstance(d, int) for d in dims[1:]):
        # Costs need sizes: estimate a model with a free image size at the usual one.
        pinned: list[int | str] = ["batch", dims[1] or "channels", SMOKE_SIZE, SMOKE_SIZE]
        loaded = load_model(args.model, pinned)
        note = f" (at {SMOKE_SIZE} x {SMOKE_SIZE}: the model takes any size; choose with --input-shape)"
    graph = loaded.graph
    prediction = pick_prediction(graph, args.prediction)
    if _inspect_blocks(args.model, graph, prediction, note):
        return 0
    default = resolve(graph, prediction, None)
    found = candidates(graph, prediction, args.depth)
    if default.tensor not in {c.tensor for c in found}:
        found.append(default)
    total = macs(graph, graph.nodes) or 1
    options = HookOptions()
    print(f"model {args.model}: prediction output '{prediction}', {total / 1e6:.1f} M MACs per image{note}")
    print("hook cost = extra MACs per image relative to the model: Recipro-CAM (one-hot mask) on the path the export")
    print("takes: mean / linear (closed forms), windows (each copy computed only where it differs), mosaic (N copies")
    print("of the tail); backward = a gradient method's, per explained class ('-': it cannot differentiate the tail);")
    print("the default target is marked *")
    print(f"  {'layer':<28} {'C x H x W':<16} {'N':>6} {'hook cost':>10}  {'path':<8} {'backward':>9}  tensor")
    for cand in found:
        tail = plan_tail(graph, cand.tensor, prediction)
        choice = choose(CNN_PATHS, graph, tail, options)
        cost = f"{100 * choice_macs(graph, tail, choice, options) / total:.1f} %" if cand.n else "?"
        back = _backward_cost(graph, tail, total)
        mark = "*" if cand.tensor == default.tensor else " "
        print(f"{mark} {cand.layer:<28} {cand.chw:<16} {cand.n or '?':>6} {cost:>10}  {choice.name:<8} {back:>9}  "
              f"{cand.tensor}")  # fmt: skip
    tail = plan_tail(graph, default.tensor, prediction)
    print(f"paths at the default target {default.layer}, in the order tried (--path NAME asks for one):")
    for option in survey(CNN_PATHS, graph, tail, options):
        _print_path(option, graph, tail, total)
    _print_gradient(graph, tail, default.layer)
    return 0


def _backward_cost(graph: GraphView, tail: Any, total: int) -> str:
    """A gradient method's backward MACs per explained class relative to the model's, or '-' where refused."""
    from ovxai.hook.cost import backward_macs
    from ovxai.hook.gradient.hook import plan_gradient

    try:
        plan = plan_gradient(graph, tail, HookOptions(method="gradcam"))
    except OvxaiError:
        return "-"
    return f"{100 * backward_macs(graph, plan) / total:.1f} %"


def _print_gradient(graph: GraphView, tail: Any, layer: str) -> None:
    """Whether the gradient methods apply at the default target, or the op they cannot differentiate."""
    from ovxai.hook.gradient.hook import plan_gradient

    try:
        plan = plan_gradient(graph, tail, HookOptions(method="gradcam"))
    except OvxaiError as exc:
        print(f"gradient methods at {layer}: do not apply: {in_cli_terms(exc.args[0])}")
        return
    print(f"gradient methods at {layer} (--method {', '.join(GRADIENT_METHODS)}): apply, the backward runs through "
          f"{len(plan.nodes)} ops of the tail; integrated-gradcam also runs the network once per step")  # fmt: skip


def _inspect_patched(model: Path, info: ModelInfo) -> None:
    """What a model exported by ovxai records about its maps."""
    method = info.method or "recipro"
    steps = f", {info.steps} steps" if info.steps else ""
    print(f"model {model}: exported by ovxai with a '{SALIENCY_OUTPUT}' output")
    print(f"  method   {method}{steps}, score {info.score or 'softmax'}, explains {info.explained or 'all'} classes")
    if info.labels:
        print(f"  labels   {len(info.labels)} classes ({info.labels[0]}, ...)")
    if info.mean is not None or info.scale is not None:
        print(f"  preprocessing  mean {_floats(info.mean)}, scale {_floats(info.scale)}, "
              f"channel order {info.channel_order or 'not recorded'}")  # fmt: skip


def _print_path(option: Choice[Any], graph: GraphView, cut: Any, total: int) -> None:
    """One path's line in ``inspect``: its cost where it applies (one-hot / Gaussian mask), or why it does not."""
    from ovxai.hook.cost import hook_macs
    from ovxai.hook.paths.path import Declined

    if isinstance(option.plan, Declined):
        print(f"  {option.name:<8} {'-':>15}  does not apply: {option.plan.reason}")
        return
    costs = []
    for mask in MASKS:
        try:
            costs.append(f"{100 * hook_macs(graph, cut, HookOptions(mask=mask, path=option.name)) / total:.1f}")
        except OvxaiError:  # applies with one mask only (the Gaussian's wider windows may not pay)
            costs.append("n/a")
    print(f"  {option.name:<8} {'/'.join(costs) + ' %':>15}  applies")


def _inspect_blocks(model: str, graph: GraphView, prediction: str, note: str) -> bool:
    """A vision transformer's blocks with the hook's cost at each, and each path at the default block with why it
    applies or not (False: not a transformer, or a CNN whose inner transformers are not the natural target)."""
    from ovxai.graph.macs import macs
    from ovxai.hook.cost import hook_macs
    from ovxai.hook.paths import VIT_PATHS, survey
    from ovxai.hook.paths.path import Declined
    from ovxai.hook.tokens import hybrid, plan_tokens, transformer_blocks

    blocks = transformer_blocks(graph, prediction)
    if not blocks:
        return False
    if hybrid(graph, prediction, blocks[-1]):
        print(f"attention blocks inside a CNN ({blocks[0]} ... {blocks[-1]}): the default target is its last feature")
        print("map; --layer BLOCK explains a block's input tokens instead")
        return False
    total = macs(graph, graph.nodes) or 1
    options = HookOptions()
    print(f"model {model}: prediction output '{prediction}', {total / 1e6:.1f} M MACs per image{note}")
    print("vision transformer: ViT-ReciproCAM explains a block's input tokens (--layer BLOCK); hook cost = extra")
    print("MACs per image relative to the model (one-hot / Gaussian mask) on the exact short sequence, and on the")
    print("general path (every copy on all tokens); * = default target")
    print(f"  {'block':<36} {'tokens x D':<12} {'h x w':<7} {'short':>15} {'general':>9}  tensor")
    default = None
    for block in blocks:
        mark = "*" if block == blocks[-1] else " "
        try:
            plan = plan_tokens(graph, prediction, block)
        except OvxaiError as exc:
            print(f"{mark} {block:<36} refused: {exc}")
            continue
        assert plan is not None
        default = plan if block == blocks[-1] else default
        short = survey(VIT_PATHS, graph, plan, options)[0]
        tokens = "x".join(str(d) for d in (graph.tensor(plan.target).shape or ("?", "?"))[1:])
        if isinstance(short.plan, Declined):
            cost = "n/a"
        else:
            cost = "/".join(f"{100 * hook_macs(graph, plan, HookOptions(mask=m)) / total:.1f}" for m in MASKS) + " %"
        grid = f"{plan.grid[0]}x{plan.grid[1]}"
        print(f"{mark} {block:<36} {tokens:<12} {grid:<7} {cost:>15} "
              f"{100 * hook_macs(graph, plan, HookOptions(path='mosaic')) / total:>7.0f} %  {plan.target}")  # fmt: skip
    if default is not None:
        print(f"paths at the default block {default.block}, in the order tried (--path NAME asks for one):")
        for option in survey(VIT_PATHS, graph, default, options):
            _print_path(option, graph, default, total)
    return True


if __name__ == "__main__":
    sys.exit(main())
