"""Command line: ``ovxai export``, ``ovxai inspect`` and ``ovxai explain``."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ovxai.conventions import CHANNEL_ORDERS, MASKS, SALIENCY_DTYPES, SCORES
from ovxai.errors import OvxaiError
from ovxai.hook.options import HookOptions
from ovxai.metadata import ModelInfo

if TYPE_CHECKING:
    from ovxai.exporter.pipeline import ExportResult
    from ovxai.graph.view import GraphView
    from ovxai.serving.collection import CollectionOptions


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


PATHS = ("auto", "general")  # --path: HookOptions.fast_path True / False

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
    "mask": "--mask",
    "saliency_dtype": "--saliency-dtype",
    "targets": "--explain",
    "explain": "--explain",
    "top_k": "--top-k",
}
_PARAMETER = re.compile(r"(?<![\w-])(" + "|".join(_FLAGS) + r")= ?")


def in_cli_terms(message: str) -> str:
    """'pick one with layer=' -> 'pick one with --layer'."""
    return _PARAMETER.sub(lambda m: _FLAGS[m.group(1)] + " ", message).replace("  ", " ")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ovxai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    exp = sub.add_parser("export", help="add the in-graph Recipro-CAM saliency_map output to a classifier")
    source = exp.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", "-m", type=Path, help="input classifier (.onnx, or .xml IR)")
    source.add_argument("--torch", metavar="MODULE:FACTORY", help="a torch classifier from a factory (needs torch)")
    exp.add_argument("--output", "-o", type=Path, help="patched model, .onnx or .xml (default: <model>_xai.onnx)")
    exp.add_argument("--layer", "-l", help="module path (layer4), node or tensor name; default: automatic")
    exp.add_argument("--score", choices=SCORES, default=SCORES[0])
    exp.add_argument("--mask", choices=MASKS, default=MASKS[0])
    exp.add_argument("--saliency-dtype", choices=SALIENCY_DTYPES, default=SALIENCY_DTYPES[0])
    exp.add_argument(
        "--path",
        choices=PATHS,
        default=PATHS[0],
        help="auto (default): an exact shortcut where the tail allows one; general: every copy on the whole map",
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
        help="write DIR/NAME/1/model.xml|onnx and Triton's DIR/NAME/config.pbtxt (NAME: output's stem)",
    )
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
    exp2.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU, AUTO (default CPU)")
    exp2.add_argument("--backend", choices=("auto", "openvino", "onnxruntime"), default="auto")
    exp2.add_argument("--top-k", type=int, default=5, help="predictions to report per image (default 5; at most K)")
    exp2.add_argument("--explain", default="top1", help="classes to map: topK, the K best (default top1); ids: 281,285")
    exp2.add_argument("--labels", type=Path, help="class names file, if the model carries none")
    exp2.add_argument("--mean", help="per-channel mean (default: the model's; required if it has none), e.g. 0")
    exp2.add_argument("--scale", help="per-channel scale (default: the model's; required if it has none), e.g. 1")
    exp2.add_argument("--channel-order", choices=CHANNEL_ORDERS, help="default: the model's, else rgb")
    exp2.add_argument("--jobs", type=int, default=2, help="inference requests in flight (default 2)")
    exp2.add_argument("--colormap", choices=("turbo", "jet", "gray"), default="turbo")
    exp2.add_argument("--alpha", type=float, default=0.5, help="overlay opacity from 0 to 1 (default 0.5)")
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

    srv = sub.add_parser("serve", help="serve a patched model on Ray Serve (Open Inference Protocol, /v1/explain)")
    srv.add_argument("--model", "-m", type=Path, required=True, help="patched model (.xml or .onnx)")
    srv.add_argument("--name", help="the model's name in the protocol's URLs (default: the file's stem)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    srv.add_argument("--device", default="CPU", help="OpenVINO device of each replica: CPU, GPU, NPU, AUTO")
    srv.add_argument("--backend", choices=("auto", "openvino", "onnxruntime"), default="auto")
    srv.add_argument("--replicas", type=int, default=1, help="replicas, each with the model loaded (default 1)")
    srv.add_argument("--max-replicas", type=int, help="autoscale from --replicas up to this many")
    srv.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica (default 1)")
    srv.add_argument("--max-batch-size", type=int, default=8, help="dynamic batching: most requests per batch; 1: off")
    srv.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="dynamic batching: longest wait for company (0: the queued ones)",
    )
    srv.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray instance)")
    srv.add_argument(
        "--proxy-location",
        choices=("HeadOnly", "EveryNode"),
        default="HeadOnly",
        help="where Ray Serve's HTTP proxies run (default HeadOnly: one address)",
    )
    srv.add_argument("--node-ip-address", help="the IP of the local Ray instance's node (as ray start's flag)")
    srv.add_argument("--labels", type=Path, help="class names file, if the model carries none")
    srv.add_argument("--mean", help="per-channel mean (default: the model's; required if it has none), e.g. 0")
    srv.add_argument("--scale", help="per-channel scale (default: the model's; required if it has none), e.g. 1")
    srv.add_argument("--channel-order", choices=CHANNEL_ORDERS, help="default: the model's, else rgb")

    ins = sub.add_parser("inspect", help="list the layers the hook can explain, with shapes and cost")
    ins.add_argument("--model", "-m", type=Path, required=True, help="classifier (.onnx, or .xml IR)")
    ins.add_argument("--depth", type=int, default=2, help="deepest module path level to list (default 2)")
    _model_args(ins)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", type=_shape, help="pin the image input's shape, e.g. ?,3,224,224")
    parser.add_argument("--prediction", help="name of the class-score output when there are several")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"export": _export, "inspect": _inspect, "explain": _explain, "serve": _serve}[args.command](args)
    except OvxaiError as exc:
        print(f"ovxai {args.command}: error: {in_cli_terms(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = "nothing was written" if args.command == "export" else "stopped"
        print(f"ovxai {args.command}: interrupted; {done}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ovxai inspect ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def _export(args: argparse.Namespace) -> int:
    options = HookOptions(
        score=args.score,
        mask=args.mask,
        saliency_dtype=args.saliency_dtype,
        explain=args.explain,
        fast_path=args.path == "auto",
    )
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
    """``--repository DIR``: the model as ``DIR/NAME/1/model.*`` and Triton's ``DIR/NAME/config.pbtxt``."""
    from ovxai.serving.repository import folders, model_file, write_config

    path = model_file(args.repository, output)
    with folders(path):
        result = write(path)
        result.files.append(write_config(path))
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


PATH_NAMES = {
    "mean": "exact shortcut through the global pool",
    "linear": "exact shortcut through the linear layer",
    "windows": "exact incremental copies (each computed only where it differs from the background)",
    "tokens": "ViT-ReciproCAM, exact short sequence",
    "mosaic": "general path (full mosaic)",
}


def _report(result: ExportResult, options: HookOptions) -> None:
    t = result.target
    path = PATH_NAMES[result.path] if result.grid is None or result.path == "tokens" else "ViT-ReciproCAM, general path"
    if result.grid is None:
        print(f"target   {t.layer} -> '{t.tensor}'  C x H x W = {t.chw}  N = {t.n or 'H*W at run time'}")
    else:
        h, w = result.grid
        print(f"target   input of block {t.layer} -> '{t.tensor}'  tokens x D = {t.chw}  grid {h} x {w}, N = {h * w}")
    print(f"hook     {path}, score {options.score}, mask {options.mask}, saliency {options.saliency_dtype}")
    if result.isolated:
        print(
            "note     the engine compiled the original path otherwise when the hook read it (the prediction moved): "
            "the hook runs on its own copy of the network, about twice the computation"
        )
    extra = " + 'feature_vector' (B, C)" if result.path in ("mean", "windows") else ""
    if options.explain != "all":
        extra += f" + 'saliency_classes' (B, K') for explain {options.explain}"
    print(f"outputs  '{result.prediction}' (unchanged) + 'saliency_map' (B, K, H, W){extra}")
    for f in result.files:
        print(f"wrote    {f}")


def _explain(args: argparse.Namespace) -> int:
    import json
    import os
    import re
    import time

    from tqdm import tqdm

    from ovxai.metadata import ModelInfo
    from ovxai.runtime import Explainer, ImageError, check_targets, contact_sheet, named_image_files, parse_targets
    from ovxai.runtime.pictures import check_overlay
    from ovxai.serving.collection import expand_lists

    flags = {"targets": "--explain", "top_k": "--top-k", "jobs": "--jobs", "alpha": "--alpha", "mean": "--mean",
             "scale": "--scale", "labels": "--labels", "channel_order": "--channel-order", "actors": "--actors",
             "batch_size": "--batch-size", "cpus_per_actor": "--actor-cpus"}  # fmt: skip

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
        if args.jobs < 1:
            raise OvxaiError(f"jobs= {args.jobs} runs no request", "use jobs=1 or more")
        check_overlay(args.alpha, args.colormap)
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
    files = list(names)
    if not files:
        raise OvxaiError("no images found in the given folders", "pass image files or folders with images")
    if collection is not None:
        return _explain_collection(args, collection, names, in_flags)
    try:
        explainer = Explainer.load(
            args.model, args.backend, args.device, labels=override.labels, mean=override.mean,
            scale=override.scale, channel_order=args.channel_order,
        )  # fmt: skip
        check_targets(targets, explainer.num_classes)
    except OvxaiError as exc:
        raise in_flags(exc) from None
    print(f"preprocessing: {explainer.describe_preprocessing()}")
    skipped: list[dict[str, str]] = []

    def skip(item: object, exc: ImageError) -> None:
        if len(files) == 1:
            raise exc  # alone, a bad image is the error
        print(f"ovxai explain: warning: skipped {exc}", file=sys.stderr)
        skipped.append({"image": str(item), "error": str(exc)})

    def write(path: Path, save: Callable[[Path], object]) -> str:
        try:
            out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
            save(path)
        except OSError as exc:
            raise OvxaiError(f"cannot write '{path}' ({exc.strerror or exc})", "check the disk and --out") from None
        return str(path)

    by_source = {str(file): name for file, name in names.items()}
    results, summary = [], []
    start = time.perf_counter()
    stream = explainer.explain_many(files, targets, args.top_k, jobs=args.jobs, on_error=skip)
    for result in tqdm(stream, total=len(files), unit="image", disable=None, file=sys.stderr):
        entry = result.summary()
        name = by_source.get(result.source, Path(result.source).stem)
        entry["overlays"] = [
            write(out / f"{name}_{target.class_id}.png", result.overlay(i, args.alpha, args.colormap).save)
            for i, target in enumerate(result.targets)
        ]
        summary.append(entry)
        results.append(result)
        best = result.top[0]
        tqdm.write(f"{Path(result.source).name}: {best.label} ({best.score * 100:.1f} %)", file=sys.stdout)
    elapsed = time.perf_counter() - start
    if results:
        write(out / "contact_sheet.png", contact_sheet(results[:64]).save)
    report = {
        "model": str(args.model),
        "device": args.device,
        "preprocessing": explainer.describe_preprocessing(),
        "images": summary,
        "skipped": skipped,
        "total_seconds": round(elapsed, 3),
        "images_per_second": round(len(results) / elapsed, 2) if elapsed else None,
    }
    write(out / "summary.json", lambda path: path.write_text(json.dumps(report, indent=2)))
    print(f"explained {len(results)} image(s), skipped {len(skipped)}; wrote {out / 'summary.json'}")
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
    from ovxai.serving.collection import CollectionOptions

    pool = {field: getattr(args, name) for name, field in _RAY_FLAGS.items() if name in vars(args)}
    return CollectionOptions(
        str(args.model), args.device, args.backend, given.labels, given.mean, given.scale, args.channel_order,
        targets, args.top_k, args.alpha, args.colormap, jobs=args.jobs, **pool,
    )  # fmt: skip


def _explain_collection(
    args: argparse.Namespace,
    options: CollectionOptions,
    names: dict[Path, str],
    in_flags: Callable[[OvxaiError], OvxaiError],
) -> int:
    """``ovxai explain --ray``: exit 0 when every image was explained, 1 when some were skipped."""
    from ovxai.serving.collection import RESULTS, explain_collection

    try:
        done = explain_collection(
            options, names, args.out, vars(args).get("address"), vars(args).get("node_ip_address")
        )
    except OvxaiError as exc:
        raise in_flags(exc) from None
    rate = f" ({done.images_per_second:.1f} images/s)" if done.explained else ""
    print(f"explained {done.explained} image(s){rate}, skipped {done.skipped}; wrote {args.out / RESULTS}")
    return 1 if done.skipped else 0


def _serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError:
        raise OvxaiError("ovxai serve needs Ray Serve and FastAPI", "pip install 'ovxai[serve]'") from None
    from ovxai.serving.server import ServeOptions, check, serve_model

    flags = {"name": "--name", "max_batch_size": "--max-batch-size", "batch_wait_ms": "--batch-wait-ms",
             "replicas": "--replicas", "max_replicas": "--max-replicas", "cpus_per_replica": "--replica-cpus",
             "mean": "--mean", "scale": "--scale", "labels": "--labels",
             "channel_order": "--channel-order"}  # fmt: skip
    if not 0 < args.port < 65536:
        raise OvxaiError(f"--port {args.port} is not a TCP port", "use 1..65535, e.g. 8000")
    try:
        given = ModelInfo.from_options(labels=args.labels, mean=args.mean, scale=args.scale)
        options = ServeOptions(
            str(args.model), args.device, args.backend, given.labels, given.mean, given.scale, args.channel_order,
            name=args.name or "", max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
            replicas=args.replicas, max_replicas=args.max_replicas, cpus_per_replica=args.replica_cpus,
        )  # fmt: skip
        preprocessing = check(options)
    except OvxaiError as exc:  # the library names its parameters (max_batch_size=): say the flags
        text = re.sub(r"\b(\w+)=\s*", lambda m: f"{flags[m[1]]} " if m[1] in flags else m[0], str(exc))
        raise OvxaiError(text) from None
    print(f"preprocessing: {preprocessing}", flush=True)

    def ready(url: str) -> None:
        base = url.split("/v2/")[0]
        print(f"serving {options.name} at {url} (POST {base}/v1/explain, GET {base}/v1/info)", flush=True)

    serve_model(options, args.host, args.port, args.address, args.proxy_location, ready, args.node_ip_address)
    print("ovxai serve: stopped", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ovxai.exporter.pipeline import SMOKE_SIZE, load_model
    from ovxai.graph.macs import macs
    from ovxai.hook.cost import hook_macs
    from ovxai.hook.tail import plan_tail
    from ovxai.hook.target import candidates, pick_prediction, resolve
    from ovxai.hook.windows import plan_windows

    loaded = load_model(args.model, args.input_shape)
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
    print(f"model {args.model}: prediction output '{prediction}', {total / 1e6:.1f} M MACs per image{note}")
    print("hook cost = extra MACs per image relative to the model (one-hot mask); path: mean / linear shortcut,")
    print("windows (each copy computed only where it differs) or the full mosaic (N copies of the tail); * = default")
    header = f"  {'layer':<28} {'C x H x W':<16} {'N':>6} {'hook cost':>10}  {'path':<8} tensor"
    print(header)
    taken = "mosaic"
    for cand in found:
        plan = plan_tail(graph, cand.tensor, prediction)
        n = cand.n
        cost = f"{100 * hook_macs(graph, plan, n) / total:.1f} %" if n else "?"
        mark = "*" if cand.tensor == default.tensor else " "
        path = plan.shortcut.kind if plan.shortcut else ("windows" if plan_windows(graph, plan, "onehot") else "mosaic")
        taken = path if cand.tensor == default.tensor else taken
        print(f"{mark} {cand.layer:<28} {cand.chw:<16} {n or '?':>6} {cost:>10}  {path:<8} {cand.tensor}")
    print(
        f"export without --layer explains {default.layer} on the {taken} path ({PATH_NAMES[taken]}; "
        "--path general: the mosaic)"
    )
    return 0


def _inspect_blocks(model: str, graph: GraphView, prediction: str, note: str) -> bool:
    """A vision transformer's blocks with the hook's cost at each (False: not a transformer)."""
    from ovxai.graph.macs import macs
    from ovxai.hook.vit import hook_macs, plan_tokens, transformer_blocks

    blocks = transformer_blocks(graph, prediction)
    if not blocks:
        return False
    total = macs(graph, graph.nodes) or 1
    print(f"model {model}: prediction output '{prediction}', {total / 1e6:.1f} M MACs per image{note}")
    print("vision transformer: ViT-ReciproCAM explains a block's input tokens (--layer BLOCK); hook cost = extra")
    print("MACs per image relative to the model (one-hot / Gaussian mask) on the exact short sequence, and on the")
    print("general path (every copy on all tokens); * = default target")
    print(f"  {'block':<36} {'tokens x D':<12} {'h x w':<7} {'short':>15} {'general':>9}  tensor")
    for block in blocks:
        plan = plan_tokens(graph, prediction, block)
        assert plan is not None
        tokens = "x".join(str(d) for d in (graph.tensor(plan.target).shape or ("?", "?"))[1:])
        if plan.short is None:
            short = "/".join(f"{100 * hook_macs(graph, plan, m) / total:.1f}" for m in ("onehot", "gaussian")) + " %"
        else:
            short = "n/a"
        general = f"{100 * hook_macs(graph, plan, fast_path=False) / total:.0f} %"
        mark = "*" if block == blocks[-1] else " "
        grid = f"{plan.grid[0]}x{plan.grid[1]}"
        print(f"{mark} {block:<36} {tokens:<12} {grid:<7} {short:>15} {general:>9}  {plan.target}")
        if plan.short is not None:
            print(f"      general path only: {plan.short}")
    return True


if __name__ == "__main__":
    sys.exit(main())
