"""``ovxai explain --ray``: a large image collection explained by a pool of Ray actors (Ray Data).

The driver lists the images (folders, image files, list files with one path per line) and hands Ray Data
their paths with their input index; ``map_batches`` runs them through a pool of actors, each of which loads
the patched model once (``ovxai.runtime.Explainer``: OpenVINO or ONNX Runtime, on the device asked for) and
explains its batches with ``Explainer.explain_many``, the in-process code path, so the results are the same
numbers. An image that cannot be read (missing, garbage, truncated) comes back as a row with its reason
instead of failing the job. The actors return encoded files (the maps as ``.npy``, the overlays as PNG) and
the driver writes them into ``out`` with one JSON line per image, in input order: only the driver needs
``out``, while the model and the images must be readable at the same path on every node.

Ray is imported only inside the functions that need it (``pip install 'ovxai[ray]'``).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ovxai.errors import OvxaiError
from ovxai.interrupts import sigterm_kept
from ovxai.runtime import Explanation, ImageError, Targets, check_targets, pictures
from ovxai.runtime.ahead import map_ahead
from ovxai.runtime.backends import is_model_url, redact
from ovxai.serving import results
from ovxai.serving.cluster import check_cluster
from ovxai.serving.source import ModelSource

LIST_SUFFIXES = (".txt", ".lst")  # a file with one image path per line


def read_list(path: Path) -> list[Path]:
    """The image paths of a list file, one per line (blank lines and ``#`` comments skipped); relative paths
    are relative to the list file's folder, so the list means the same from any working folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OvxaiError(f"list file '{path}' not found", "check the path given to --image") from None
    except OSError as exc:
        loop = exc.errno == errno.ELOOP
        why = "is a loop of symbolic links" if loop else f"cannot be read ({exc.strerror or type(exc).__name__})"
        raise OvxaiError(f"list file '{path}' {why}", "check the path given to --image") from None
    except UnicodeDecodeError as exc:
        raise OvxaiError(f"cannot read list file '{path}' ({type(exc).__name__})", "give a UTF-8 text file") from None
    lines = (line.strip() for line in text.splitlines())
    return [path.parent / line for line in lines if line and not line.startswith("#")]


def expand_lists(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with every list file (``.txt``, ``.lst``) replaced by the paths it lists; folders and
    image files stay as they are."""
    expanded: list[Path] = []
    for path in paths:
        expanded += read_list(path) if path.suffix.lower() in LIST_SUFFIXES else [path]
    return expanded


@dataclass(frozen=True)
class CollectionOptions(ModelSource):
    """The model each actor loads (:class:`ModelSource`), what it explains and draws, and the pool:
    ``actors`` actors of ``cpus_per_actor`` CPUs each, ``batch_size`` images per call, each call with
    ``jobs`` inference requests in flight (as ``explain_many``)."""

    targets: Targets = "top1"
    top_k: int = 5
    alpha: float = 0.5
    colormap: str = "turbo"
    overlay_format: str = "jpeg"  # png, jpeg or webp (ovxai.runtime.pictures.encode)
    actors: int = 2
    batch_size: int = 8
    jobs: int = 2
    cpus_per_actor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "overlay_format", pictures.check_format(self.overlay_format))
        for what, value in (("actors", self.actors), ("batch_size", self.batch_size), ("jobs", self.jobs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OvxaiError(f"{what}= {value} is not a whole number of 1 or more", f"use {what}=1 or more")
        if not math.isfinite(self.cpus_per_actor) or self.cpus_per_actor <= 0:
            raise OvxaiError(f"cpus_per_actor= {self.cpus_per_actor} is not a CPU count", "e.g. 1 or 0.5")


@dataclass
class Outcome:
    """The images of the whole folder explained and skipped (a resumed run's included), and this run's
    share: ``seconds`` for the ``new`` ones explained."""

    explained: int
    skipped: int
    seconds: float
    new: int

    @property
    def images_per_second(self) -> float:
        return self.new / self.seconds if self.seconds else 0.0


class ExplainActor:
    """One actor of the pool: the model loaded once, then ``__call__`` per batch of rows (index, path,
    name) -> rows (index, record as JSON text, maps as .npy bytes, overlays as PNG bytes)."""

    def __init__(self, options: CollectionOptions) -> None:
        self.options = options
        self.explainer = options.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:  # a pyarrow.Table (pyarrow ships no types)
        import pyarrow as pa

        paths = [str(p) for p in batch["path"]]
        errors: dict[str, str] = {}

        def skip(item: object, exc: ImageError) -> None:
            errors[str(item)] = str(exc)

        options = self.options

        def draw(result: Explanation) -> list[bytes]:
            return [
                pictures.encode(result.overlay(i, options.alpha, options.colormap), options.overlay_format)
                for i in range(len(result.targets))
            ]

        # The overlays of each result are drawn and encoded on a thread while the engine runs the next ones.
        stream = self.explainer.explain_many(paths, options.targets, options.top_k, options.jobs, on_error=skip)
        workers = max(1, round(options.cpus_per_actor))
        with closing(stream), closing(map_ahead(draw, stream, workers, 2 * workers, "ovxai-draw")) as drawing:
            explained = {result.source: (result, drawn.result()) for result, drawn in drawing}
        records: list[str] = []
        maps: list[bytes] = []
        overlays: list[list[bytes]] = []
        for path, given in zip(paths, batch["image"], strict=True):
            if path not in explained:  # the message names the path as the user gave it, not the absolute one
                records.append(json.dumps({"error": errors[path].replace(path, str(given))}))
                maps.append(b"")
                overlays.append([])
                continue
            result, drawn_overlays = explained[path]
            record = result.summary()
            del record["image"]  # the driver has the path as given
            records.append(json.dumps(record, ensure_ascii=False))
            maps.append(_npy(result.maps))
            overlays.append(drawn_overlays)
        return pa.table(
            {
                "index": pa.array(batch["index"], pa.int64()),
                "record": pa.array(records, pa.string()),
                "maps": pa.array(maps, pa.binary()),
                "overlays": pa.array(overlays, pa.list_(pa.binary())),
            }
        )


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()


_JOIN_FIX = "check --address (or RAY_ADDRESS), and the token (RAY_AUTH_TOKEN) where the cluster asks for one"


@contextmanager
def ray_instance(address: str | None, cpus: float, node_ip: str | None = None) -> Iterator[None]:
    """Connected to Ray for the block: to ``address`` (else ``RAY_ADDRESS``), an existing cluster that stays
    up; else to a local instance started here (on ``node_ip``, as ``ray start --node-ip-address``) with at
    least ``cpus`` CPUs, stopped at the end. Already connected (a caller's ``ray.init()``): that connection,
    left as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's own notices (a local instance started, its token authentication) are not the user's business
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    with sigterm_kept():  # ray.init's own SIGTERM handler kills the local instance under the running driver
        if address:
            check_cluster(address)  # a bounded wait and one line, where ray.init would retry for minutes
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise OvxaiError(f"cannot join the Ray cluster at {address}: {_last_line(exc)}", _JOIN_FIX) from None
        else:
            wanted = max(os.cpu_count() or 1, math.ceil(cpus))
            ray.init(address="local", num_cpus=wanted, _node_ip_address=node_ip, **quiet)
    try:
        yield
    finally:
        ray.shutdown()  # a local instance stops; on a cluster, this driver's actors go with it


@contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data's settings for this run, put back afterwards: results in input order, and no progress
    bars or statistics of its own (the driver's one bar says what matters, and disables itself off a
    terminal, where bars would fill a log with carriage returns)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.enable_auto_log_stats)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.enable_auto_log_stats = False
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.ERROR)  # no "Starting execution of Dataset", "Progress bars disabled" notices
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.enable_auto_log_stats = saved
        logger.setLevel(level)


def explain_collection(
    options: CollectionOptions,
    images: dict[Path, str],
    out: Path,
    address: str | None = None,
    node_ip: str | None = None,
) -> Outcome:
    """Explain ``images`` (path -> a unique name for its files, as ``named_image_files`` gives) on Ray and
    write into ``out``: ``results.jsonl``, one line per image in input order (``index``, ``image``, then
    ``top``, ``targets``, ``map``, ``overlays``, ... or ``error``), each image's maps as ``NAME.npy``
    ((T, h, w) float32) and overlays as ``NAME_CLASS.jpg`` (or ``.png``, ``.webp``: ``overlay_format``),
    and ``run.json``. A rerun into the same ``out`` resumes or starts clean (``ovxai.serving.results``).
    Bad images are reported on stderr, one line each, and skipped. The model is loaded here once first, so
    that a problem with it is one line before Ray starts. The counts include the lines a resume kept."""
    explainer = options.load()
    check_targets(options.targets, explainer.num_classes)
    print(f"preprocessing: {explainer.describe_preprocessing()}", flush=True)
    del explainer  # the driver's copy of the model goes before the actors load theirs
    if not is_model_url(options.model):  # the actors run in other folders: give them absolute paths
        options = replace(options, model=str(Path(options.model).absolute()))
    rows = [
        {"index": i, "path": str(path.absolute()), "image": str(path), "name": name}
        for i, (path, name) in enumerate(images.items())
    ]
    listed = [(str(path), name) for path, name in images.items()]
    run = results.identity(_model_identity(options.model), _settings(options), listed)
    kept = results.look(out, run)
    if kept.lines == len(rows):
        print(kept.note, flush=True)
        return Outcome(kept.explained, kept.skipped, 0.0, 0)
    with (
        _bar(len(rows), kept.lines) as bar,  # on the terminal from the start: Ray takes seconds to start
        ray_instance(address, options.actors * options.cpus_per_actor, node_ip),
        _data_context(),
    ):
        kept.apply()  # once Ray is up: a run that cannot start changes nothing
        if kept.note:
            bar.write(kept.note, file=sys.stdout)
        import ray.data
        from ray.exceptions import RayError

        dataset = ray.data.from_items(rows[kept.lines :]).map_batches(
            ExplainActor,
            fn_constructor_kwargs={"options": options},
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            batch_size=options.batch_size,
            batch_format="numpy",
            num_cpus=options.cpus_per_actor,
        )
        with closing(results.Writer(out, run, kept)) as writer:
            try:
                done = _write(dataset, rows, writer, options.overlay_format, bar)
            except RayError as exc:
                raise OvxaiError(
                    f"the Ray job failed: {_last_line(exc)}",
                    "check that the model and the images are readable at the same path on every node",
                ) from None
    return Outcome(kept.explained + done.explained, kept.skipped + done.skipped, done.seconds, done.explained)


def _model_identity(model: str) -> dict[str, Any]:
    """The model as results depend on it: a URL (without its password), or a file's path, size and time."""
    if is_model_url(model):
        return {"url": redact(model)}
    path = Path(model)
    stat = path.stat()
    extra = path.with_suffix(".bin") if path.suffix.lower() == ".xml" else None  # an IR's weights
    weights = extra.stat() if extra is not None and extra.is_file() else None
    return {
        "file": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "weights": None if weights is None else [weights.st_size, weights.st_mtime_ns],
    }


def _settings(options: CollectionOptions) -> dict[str, Any]:
    """The options that change a result (not the pool's size or the timeout)."""
    pool = {"model", "actors", "batch_size", "jobs", "cpus_per_actor", "timeout"}
    return {k: v for k, v in asdict(options).items() if k not in pool}


def _bar(total: int, done: int) -> Any:
    """A progress bar on stderr, off where stderr is not a terminal (a log gets no carriage returns)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="image", disable=None, file=sys.stderr)


def _write(dataset: Any, rows: list[dict[str, Any]], writer: results.Writer, form: str, bar: Any) -> Outcome:
    start = time.perf_counter()
    explained = skipped = 0
    suffix = pictures.SUFFIXES[form]
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        columns = (batch[c].to_pylist() for c in ("index", "record", "maps", "overlays"))
        for index, record, maps, overlays in zip(*columns, strict=True):
            row = rows[index]
            entry = {"index": index, "image": row["image"], **json.loads(record)}
            files: dict[str, bytes] = {}
            if "error" in entry:
                skipped += 1
                bar.write(f"ovxai explain: warning: skipped {entry['error']}", file=sys.stderr)
            else:
                explained += 1
                entry["map"] = f"{row['name']}.npy"
                entry["overlays"] = [f"{row['name']}_{target['class_id']}{suffix}" for target in entry["targets"]]
                files = dict(zip([entry["map"], *entry["overlays"]], [maps, *overlays], strict=True))
            writer.add(entry, files)
            bar.update()
            bar.set_postfix(skipped=skipped, refresh=False)
    return Outcome(explained, skipped, time.perf_counter() - start, explained)


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines or [type(exc).__name__])[-1][:300]
