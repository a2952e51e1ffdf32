"""Inference backends: OpenVINO (CPU, GPU, NPU, AUTO), ONNX Runtime (execution providers), and a model
served by any Open Inference Protocol server (``http://host:port/v2/models/NAME``, through tritonclient)."""

from __future__ import annotations

import atexit
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from numbers import Real
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from ovxai.conventions import HOOK_OUTPUTS
from ovxai.errors import OvxaiError, engine_reason
from ovxai.interrupts import keep_signal_stack
from ovxai.metadata import ModelInfo, read_onnxruntime, read_openvino, read_parameters

K = TypeVar("K")
Outputs = dict[str, np.ndarray]
Stream = Generator[tuple[K, Outputs, float], None, None]
"""(key, outputs, seconds the request ran), in submission order; close() waits for what is in flight."""

_BUSY_QUEUES: set[Any] = set()  # OpenVINO AsyncInferQueues that a stream is using, see _drain_at_exit
_BUSY_LOCK = threading.Lock()


@atexit.register
def _drain_at_exit() -> None:
    """A stream its caller stopped reading (an exception in the caller's loop) is closed only when the
    interpreter finalises; a request that completes after finalisation began kills its OpenVINO thread
    inside a C++ catch-all: SIGABRT. Exit handlers run before that point: wait for them here."""
    with _BUSY_LOCK:
        busy = list(_BUSY_QUEUES)
    for queue in busy:
        queue.wait_all()


class Session(Protocol):
    """One loaded model, ready to run."""

    input_name: str
    input_shape: list[int | None]  # None for a dynamic dimension
    input_dtype: str  # numpy's name: 'float32'
    output_names: list[str]
    output_shapes: dict[str, list[int | None]]
    output_dtypes: dict[str, str]  # numpy's names: 'float32', 'uint8', 'int64'
    info: ModelInfo  # what the exporter recorded: labels, preprocessing, score
    optimal_requests: int  # requests in flight that keep the engine busy: OpenVINO's own figure, else 1

    def infer(self, x: np.ndarray) -> Outputs: ...

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        """Several requests in flight at once; (key, outputs, seconds the request ran) in submission order.

        Whatever ends the iteration early (an exception in ``batches`` or in the consumer, ``close()``)
        first waits for the requests in flight: an engine torn down under running requests aborts the
        whole process."""
        ...


def is_model_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a served model (``http://`` or ``https://``) rather than a file."""
    return isinstance(path, str) and re.match(r"(?i)https?://", path) is not None


def open_session(
    path: str | os.PathLike[str], backend: str = "auto", device: str | None = None,
    providers: Sequence[str] | None = None, config: dict[str, Any] | None = None, timeout: float | None = None,
    throughput: bool = False,
) -> Session:  # fmt: skip
    """``path`` loaded on ``backend``: a model file on ``device`` (default CPU), or the model a server serves
    at a URL, each of whose answers is waited for ``timeout`` seconds at most (default
    :data:`DEFAULT_TIMEOUT_S`). ``throughput``: the caller keeps several requests in flight (OpenVINO's
    THROUGHPUT hint, see :class:`OpenVinoSession`). What one kind cannot use is an error rather than ignored."""
    if is_model_url(path):
        if device is not None:
            raise OvxaiError(
                f"device= {device} means nothing for a model URL: its server runs it on the device it was served on",
                "drop device= here and serve the model with ovxai serve --device instead",
            )
        given = {"providers": providers, "config": config, "throughput": throughput or None}
        ignored = next((name for name, value in given.items() if value is not None), None)
        if ignored:
            raise OvxaiError(
                f"{ignored}= means nothing for a model URL: its server runs it as served", f"drop {ignored}="
            )
        if backend not in ("auto", "remote"):
            raise OvxaiError(f"backend '{backend}' cannot run a model URL", "leave the backend auto for a served model")
        return RemoteSession(str(path), DEFAULT_TIMEOUT_S if timeout is None else timeout)
    if timeout is not None:
        raise OvxaiError("timeout= applies to a served model (a URL), not to a model file", "drop timeout=")
    device = device or "CPU"
    path = Path(path)
    if not path.is_file():
        raise OvxaiError(f"model file '{path}' not found", "check the --model path")
    if path.suffix.lower() not in (".xml", ".onnx"):
        raise OvxaiError(f"'{path}' is neither OpenVINO IR (.xml) nor ONNX (.onnx)", "pass the exported model")
    if backend == "auto":
        backend = "openvino" if path.suffix.lower() == ".xml" or _installed("openvino") else "onnxruntime"
    if backend == "openvino":
        return OpenVinoSession(path, device, config, throughput)
    if backend == "onnxruntime":
        if path.suffix.lower() == ".xml":
            raise OvxaiError("ONNX Runtime cannot run OpenVINO IR", "use backend 'openvino' or the .onnx export")
        return OnnxRuntimeSession(path, device, providers)
    raise OvxaiError(f"unknown backend '{backend}'", "use openvino, onnxruntime or auto")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class OpenVinoSession:
    """A model compiled by OpenVINO. On CPU the runtime asks for f32 inference (``config=None``): min-max
    normalisation magnifies rounding. ``throughput`` adds the THROUGHPUT performance hint (unless ``config``
    sets one): several streams, each request on a share of the cores, where the default LATENCY hint runs
    each request on all of them. For a folder of images (``ovxai explain``) that is the engine's best, and
    decoding and drawing beside it slow one stream a little instead of stalling every request's parallel
    loops (README, ``ovxai explain``, has the numbers)."""

    def __init__(self, path: Path, device: str, config: dict[str, Any] | None, throughput: bool = False) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise OvxaiError("the OpenVINO backend needs the 'openvino' package", "pip install openvino") from None
        core = ov.Core()
        known = core.available_devices
        if device.split(":")[0] not in ("AUTO", "MULTI", "HETERO", "BATCH") and device not in known:
            raise OvxaiError(f"OpenVINO device '{device}' is not available", f"choose one of: {', '.join(known)}, AUTO")
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise OvxaiError(f"the weights file '{path.with_suffix('.bin')}' is missing", "keep it beside the .xml")
        try:
            model = core.read_model(os.fspath(path))
        except RuntimeError as exc:
            raise OvxaiError(f"cannot read '{path}': {engine_reason(exc)}", "re-export the model") from None
        self.info = read_openvino(model)  # rt_info of an IR, or an ONNX file's metadata_props
        self.input_name = model.inputs[0].get_any_name()
        self.input_shape = _dims(model.inputs[0].get_partial_shape())
        self.input_dtype = _ov_dtype(model.inputs[0])
        self.output_names = [output_name(o) for o in model.outputs]
        self.output_shapes = {output_name(o): _dims(o.get_partial_shape()) for o in model.outputs}
        self.output_dtypes = {output_name(o): _ov_dtype(o) for o in model.outputs}
        if config is None:
            # Min-max normalisation magnifies rounding: CPU plugins that default to bf16 get f32.
            config = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
        if throughput:
            config = {"PERFORMANCE_HINT": "THROUGHPUT", **config}
        try:
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise OvxaiError(
                f"cannot compile the model for {device}: {engine_reason(exc)}", _device_hint(device)
            ) from None
        keep_signal_stack()
        self.request = self.compiled.create_infer_request()
        self.optimal_requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.device = device
        self._ov = ov
        self._queues: list[tuple[int, Any]] = []  # idle AsyncInferQueues by size, see _take_queue
        self._lock = threading.Lock()

    def infer(self, x: np.ndarray) -> Outputs:
        result = self.request.infer({0: x})
        return {output_name(o): np.array(result[o], copy=True) for o in self.compiled.outputs}

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        queue = self._take_queue(jobs)
        with _BUSY_LOCK:
            _BUSY_QUEUES.add(queue)
        done: dict[int, tuple[Outputs, float] | BaseException] = {}  # filled by OpenVINO's callback threads
        keys: dict[int, K] = {}

        def take(index: int) -> tuple[K, Outputs, float]:
            result = done.pop(index)
            if isinstance(result, BaseException):
                raise OvxaiError(f"inference failed: {engine_reason(result)}", _device_hint(self.device))
            return keys.pop(index), *result

        next_out = 0
        try:
            for index, (key, x) in enumerate(batches):
                keys[index] = key
                queue.start_async({0: x}, (done, index))  # blocks while all `jobs` requests are busy
                while next_out in done:  # hand back finished results, in order, while others run
                    yield take(next_out)
                    next_out += 1
            queue.wait_all()
            while keys:
                yield take(next_out)
                next_out += 1
        finally:
            # On every way out (an exception in `batches` or in the consumer, close()): requests still
            # running when their queue is destroyed abort the process.
            queue.wait_all()
            done.clear()
            with _BUSY_LOCK:
                _BUSY_QUEUES.discard(queue)
            with self._lock:
                self._queues.append((jobs, queue))

    def _take_queue(self, jobs: int) -> Any:
        """An idle AsyncInferQueue of ``jobs`` requests. Queues live as long as the session: OpenVINO's
        threads still hold a request for a moment after ``wait_all`` returns, and a queue destroyed in
        that moment, just before the interpreter exits, aborts it ("FATAL: exception not rethrown")."""
        with self._lock:
            for i, (size, _) in enumerate(self._queues):
                if size == jobs:
                    return self._queues.pop(i)[1]
        queue = self._ov.AsyncInferQueue(self.compiled, jobs)
        queue.set_callback(_collect)  # a module function: the queue must not hold the session (a cycle)
        return queue


def _collect(request: Any, userdata: tuple[dict[int, Any], int]) -> None:
    """AsyncInferQueue callback (OpenVINO's thread): copy the outputs out before the request is reused."""
    done, index = userdata
    try:  # an exception must not escape into OpenVINO's thread
        outputs = {output_name(o): np.array(request.get_tensor(o).data, copy=True) for o in request.model_outputs}
        done[index] = (outputs, request.latency / 1000)  # the request's own run time, without queue wait
    except BaseException as exc:
        done[index] = exc


def output_name(output: Any) -> str:
    """A tensor may carry several names (ONNX models read directly do): prefer the ones ovxai writes."""
    names = output.get_names()
    return next((n for n in HOOK_OUTPUTS if n in names), None) or output.get_any_name()


def _ov_dtype(port: Any) -> str:
    return str(np.dtype(port.get_element_type().to_dtype()).name)


def _dims(shape: Any) -> list[int | None]:
    """An OpenVINO partial shape as a list, None for each dynamic dimension."""
    return [d.get_length() if d.is_static else None for d in shape]


def _device_hint(device: str) -> str:
    if device.startswith("NPU"):
        return "the NPU needs static shapes: export with --static-batch 1 --input-shape 1,3,H,W"
    return "try device CPU"


class OnnxRuntimeSession:
    def __init__(self, path: Path, device: str, providers: Sequence[str] | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise OvxaiError("the ONNX Runtime backend needs 'onnxruntime'", "pip install onnxruntime") from None
        available = ort.get_available_providers()
        wanted = list(providers or (["CPUExecutionProvider"] if device == "CPU" else []))
        if not wanted:
            raise OvxaiError(f"device '{device}' means nothing to ONNX Runtime", "pass providers=[...] instead")
        missing = [p for p in wanted if p not in available]
        if missing:
            raise OvxaiError(
                f"ONNX Runtime provider {missing[0]} is not available", f"available: {', '.join(available)}"
            )
        try:
            options = ort.SessionOptions()
            # Idle worker threads otherwise spin after each run and starve the caller's own work
            # (decoding the next image, upsampling maps) of the CPU.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(os.fspath(path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OvxaiError(
                f"cannot load '{path}' in ONNX Runtime: {engine_reason(exc)}", "re-export the model"
            ) from None
        self.info = read_onnxruntime(self.session)
        image = self.session.get_inputs()[0]
        self.input_name = image.name
        self.input_shape = [d if isinstance(d, int) else None for d in image.shape]
        self.input_dtype = _ort_dtype(image.type)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {
            o.name: [d if isinstance(d, int) else None for d in o.shape] for o in self.session.get_outputs()
        }
        self.output_dtypes = {o.name: _ort_dtype(o.type) for o in self.session.get_outputs()}
        self.optimal_requests = 1  # one run() already uses every core

    def infer(self, x: np.ndarray) -> Outputs:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x}), strict=True))

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        # One session, several threads: ONNX Runtime's run() is thread-safe and releases the GIL.
        return _threaded(self.infer, batches, jobs, "ovxai-ort")


_ORT_TYPES = {"float": "float32", "float16": "float16", "double": "float64", "uint8": "uint8", "int8": "int8",
              "int32": "int32", "int64": "int64", "bool": "bool"}  # fmt: skip


def _ort_dtype(kind: str) -> str:
    """ONNX Runtime's 'tensor(float)' as numpy's 'float32' (unknown kinds keep ORT's word)."""
    inner = kind[len("tensor(") : -1] if kind.startswith("tensor(") else kind
    return _ORT_TYPES.get(inner, inner)


_RETRY_PAUSES_S = (0.25, 1.0)  # a served model's inference is tried again after these pauses
DEFAULT_TIMEOUT_S = 30.0  # the longest wait for a server's answer (connection, or each read of its answer)
_MODEL_URL = re.compile(r"(?P<prefix>.*?)/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?")


def redact(url: str) -> str:
    """``url`` with a password in it replaced by ``***``: what errors and reports may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))


def _seconds(value: object) -> float:
    """A timeout in seconds: a finite number above 0, else OvxaiError."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) < math.inf:
        raise OvxaiError(f"timeout= {value!r} is not a number of seconds", "e.g. timeout=30")
    return float(value)


class RemoteSession:
    """A patched model served by an Open Inference Protocol (KServe v2 REST) server: ``ovxai serve``, OpenVINO
    Model Server, Triton, KServe. Requests go through ``tritonclient.http`` with binary tensors; the model's
    metadata (``GET /v2/models/NAME``) gives its tensors, and its ``parameters`` (which ``ovxai serve`` fills
    from the model file's metadata) labels and preprocessing. ``http://USER:PASSWORD@HOST...`` logs in with
    HTTP basic authentication; the password never appears in a message.

    Each answer is waited for ``timeout`` seconds at most. A request is tried again only where the way to
    the server failed (a refused or dropped connection, a 503, a 500 that is not the server's own error),
    never after a timeout: a server that accepted the request and went silent would only be asked to go
    silent again. tritonclient's client serves one thread: each thread that calls ``infer`` gets its own."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        try:
            import tritonclient.http as triton_http
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise OvxaiError(
                "a model URL needs the 'tritonclient[http]' package", "pip install 'ovxai[serve]'"
            ) from None
        shown = redact(url)
        seconds = _seconds(timeout)
        parts = urlsplit(url)
        match = _MODEL_URL.fullmatch(parts.path)
        if not parts.hostname or match is None or parts.query or parts.fragment:
            raise OvxaiError(f"'{shown}' is not a model URL", "use http://HOST:PORT/v2/models/NAME")
        try:
            port = parts.port
        except ValueError:  # 'abc', 99999
            port = 0
        if port == 0 or parts.netloc.rpartition("@")[2].endswith(":"):
            given = parts.netloc.rpartition("@")[2].rpartition(":")[2]
            raise OvxaiError(f"'{given}' in '{shown}' is not a TCP port", "use a port from 1 to 65535, e.g. :8000")
        self.url = shown
        self.model_name = unquote(match["name"])
        self.model_version = unquote(match["version"] or "")
        self._address = parts.netloc.rpartition("@")[2] + match["prefix"]
        self._login = (unquote(parts.username or ""), unquote(parts.password)) if parts.password is not None else None
        self._ssl = parts.scheme.lower() == "https"
        self._timeout = seconds
        self._http = triton_http
        self._error_type: type[Exception] = InferenceServerException
        self._local = threading.local()
        name, version = self.model_name, self.model_version
        metadata = self._call(f"read the metadata of '{name}'", lambda c: c.get_model_metadata(name, version))
        if not isinstance(metadata, dict):
            raise OvxaiError(
                f"the server at {self._address} answered the metadata of '{name}' with {type(metadata).__name__}",
                "check that the URL is an inference server's: http://HOST:PORT/v2/models/NAME",
            )
        if not self._call(f"say whether '{name}' is ready", lambda c: c.is_model_ready(name, version)):
            raise OvxaiError(f"model '{name}' at {self._address} is not ready", "wait for the server to load it")
        inputs, outputs = metadata.get("inputs") or [], metadata.get("outputs") or []
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise OvxaiError(
                f"the served model '{self.model_name}' does not take one image tensor (its metadata's inputs: "
                f"{str(inputs)[:80]})",
                "serve the model written by ovxai export",
            )
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
            raise OvxaiError(f"the served model '{name}' lists its outputs as {str(outputs)[:80]}", "check the server")
        self.input_name = str(inputs[0].get("name"))
        self.input_datatype = str(inputs[0].get("datatype"))
        self.input_shape = _remote_dims(inputs[0].get("shape"))
        self.input_dtype = _numpy_name(self.input_datatype)
        self.output_names = [str(o["name"]) for o in outputs]
        self.output_shapes = {str(o["name"]): _remote_dims(o.get("shape")) for o in outputs}
        self.output_dtypes = {str(o["name"]): _numpy_name(str(o.get("datatype"))) for o in outputs}
        parameters = metadata.get("parameters")
        self.info = read_parameters(parameters) if isinstance(parameters, dict) else ModelInfo()
        self.optimal_requests = 1  # the server's capacity is not known here

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._http.InferenceServerClient(
                self._address, connection_timeout=self._timeout, network_timeout=self._timeout, ssl=self._ssl
            )
            if self._login is not None:
                from tritonclient.http.auth import BasicAuth

                client.register_plugin(BasicAuth(*self._login))
            self._local.client = client
        return client

    def _call(self, what: str, call: Any, retries: int = 0) -> Any:
        """``call(client)``; ``retries`` more tries, after a pause, where the failure was the way there (a 503,
        a 500 that is not the server's own JSON error, as when a replica dies mid-request, a refused or dropped
        connection) and not the request: inference is idempotent. A timeout is not tried again."""
        for attempt in range(retries + 1):
            try:
                return call(self._client())
            except self._error_type as exc:
                status = str(exc.status()) if hasattr(exc, "status") else ""
                passing = status == "503" or (status == "500" and getattr(exc, "debug_details", lambda: None)())
                if passing and attempt < retries:
                    time.sleep(_RETRY_PAUSES_S[attempt])
                    continue
                message = exc.message() if hasattr(exc, "message") else str(exc)  # the server's own error line
                raise OvxaiError(
                    f"the server at {self._address} could not {what}: {str(message)[:300]}",
                    "check the model name and the server's log",
                ) from None
            except TimeoutError:  # connected, or trying to, and no answer came
                self._local.client = None  # the connection holds a half-read answer: never reuse it
                raise OvxaiError(
                    f"the server at {self._address} did not answer within {self._timeout:g} s to {what}",
                    "check that the server is up and not overloaded, or wait longer with a larger timeout",
                ) from None
            except OSError as exc:  # refused, reset, unreachable
                self._local.client = None  # a broken connection pool: start afresh on the next call
                if attempt < retries:
                    time.sleep(_RETRY_PAUSES_S[attempt])
                    continue
                raise OvxaiError(
                    f"cannot reach {self._address} to {what} ({type(exc).__name__}: {engine_reason(exc)})",
                    "check the URL and that the server is up",
                ) from None
            except Exception as exc:  # an answer the client cannot parse: not an inference server's
                self._local.client = None
                raise OvxaiError(
                    f"the server at {self._address} gave an answer to {what} that is not the Open Inference "
                    f"Protocol's ({type(exc).__name__}: {engine_reason(exc)})",
                    "check that the URL is an inference server's: http://HOST:PORT/v2/models/NAME",
                ) from None
        raise AssertionError("unreachable")

    def infer(self, x: np.ndarray) -> Outputs:
        tensor = self._http.InferInput(self.input_name, list(x.shape), self.input_datatype)
        tensor.set_data_from_numpy(np.ascontiguousarray(x, dtype=self.input_dtype), binary_data=True)
        wanted = [self._http.InferRequestedOutput(name, binary_data=True) for name in self.output_names]
        result = self._call(
            f"run '{self.model_name}'",
            lambda c: c.infer(self.model_name, [tensor], model_version=self.model_version, outputs=wanted),
            retries=len(_RETRY_PAUSES_S),
        )
        outputs: Outputs = {}
        for name in self.output_names:
            try:
                array = result.as_numpy(name)
            except (ValueError, TypeError, KeyError) as exc:  # binary data of another size or datatype
                raise OvxaiError(f"the server's answer holds output '{name}' in a form that cannot be read "
                                 f"({engine_reason(exc)})", "check the server's log") from None  # fmt: skip
            if array is None:
                raise OvxaiError(f"the server's answer has no output '{name}'", "check the server's log")
            outputs[name] = np.array(array, copy=True)  # writable, like the local engines' outputs
        return outputs

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        # Requests in flight on `jobs` threads, each with its own client (one connection each).
        return _threaded(self.infer, batches, jobs, "ovxai-remote")


def _threaded(
    infer: Callable[[np.ndarray], Outputs], batches: Iterable[tuple[K, np.ndarray]], jobs: int, name: str
) -> Stream[K]:
    """``jobs`` calls of ``infer`` in flight on a thread pool; results in submission order, each with its
    own run time. Early exit: calls not yet started are dropped, running ones finish before returning."""

    def timed(x: np.ndarray) -> tuple[Outputs, float]:
        start = time.perf_counter()
        return infer(x), time.perf_counter() - start

    pending: deque[tuple[K, Future[tuple[Outputs, float]]]] = deque()
    pool = ThreadPoolExecutor(jobs, thread_name_prefix=name)
    try:
        for key, x in batches:
            pending.append((key, pool.submit(timed, x)))
            if len(pending) > jobs:
                key_done, future = pending.popleft()
                yield key_done, *future.result()
        while pending:
            key_done, future = pending.popleft()
            yield key_done, *future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# The Open Inference Protocol's tensor datatypes (the ones a patched model can have) -> numpy's names.
OIP_DATATYPES = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "UINT8": "uint8", "INT8": "int8",
                 "UINT16": "uint16", "INT16": "int16", "UINT32": "uint32", "INT32": "int32", "UINT64": "uint64",
                 "INT64": "int64", "BOOL": "bool"}  # fmt: skip


def _numpy_name(datatype: str) -> str:
    if datatype not in OIP_DATATYPES:
        raise OvxaiError(f"the served model has a tensor of datatype '{datatype}'", "serve what ovxai export wrote")
    return OIP_DATATYPES[datatype]


def _remote_dims(shape: Any) -> list[int | None]:
    """A metadata shape ([-1, 3, 224, 224]) as a list, None for each dynamic dimension."""
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise OvxaiError(f"the served model's metadata has the shape {shape!r}", "check the server")
    return [None if d < 0 else d for d in shape]
