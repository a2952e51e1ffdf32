"""Serving under load on loopback: ``ovxai serve``'s deployment (Ray Serve) against the in-process runtime.

What it measures (a hand-run benchmark, not a test; every count and wait is bounded):

1. **Throughput and latency** (p50, p99) at concurrency 1, 8 and 32 of Open Inference Protocol requests
   (``POST /v2/models/NAME/infer``, one preprocessed 224 x 224 image per request, binary tensors in and
   out), for the plain model (served over the protocol only) and the patched one, served the same way
   (one replica, ``ovxai serve``'s defaults: dynamic batching of up to 8 requests, no wait), beside the
   in-process ``Explainer`` (``explainer.infer`` on the same tensor, one call at a time) as the baseline.
   The patched model is also served with batches waiting up to 5 ms (the old default) and with batching
   off. Configurations are run in rotating order, ``--rounds`` times; tables give the median over rounds.
2. **The stack's own cost** (``stack``), apart from the engine's: a model whose inference takes ~0.2 ms
   (``tiny``, 32 x 32) served the same way, one request at a time: p50 of a GET that runs no model
   (``/v2/health/live``) and of an inference, against the in-process call; and the CPU milliseconds per
   request that Ray Serve's HTTP proxy and the replica used (``/proc``, their idle use subtracted), which
   contention inflates much less than wall time. The same with batches waiting 5 ms, with batching off,
   and with Ray's default of running the handlers on a second event loop in another thread (``ovxai
   serve`` runs them on the replica's own).
3. **A fault**: the patched model on two replicas under load at concurrency 8; one replica's process is
   killed (SIGKILL) after 2 s. Every request is counted: completed (200), refused with a retryable 503,
   failed with another status, or lost (no HTTP answer at all); and the time until Serve has two running
   replicas again.
4. **Bad input**: garbage bytes, an empty and a 25 MB body, wrong tensor name/shape/dtype, a client that
   never finishes its body, ``Content-Length: -1`` and ``abc``, a PNG answer for 100 classes, a
   9000 x 9000 PNG of a few KB: the status, whether the answer is one line of JSON, the time, and that
   the server still answers afterwards; the replica's peak memory before and after.

The load generator is this process: one thread per concurrent client, each with its own keep-alive
connection (``http.client``), sending a request body built once. It shares the machine's cores with the
server, so absolute numbers are this machine's; ratios between configurations are the point. Run from
the repository root (about 5 minutes on 2 cores, plus the first export)::

    .venv/bin/python tools/bench_serving.py                   # ResNet-18 layout (random weights), fast path
    .venv/bin/python tools/bench_serving.py --quick           # fewer requests, one round
    .venv/bin/python tools/bench_serving.py --json out/bench_serving.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import signal
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from harness import markdown_table, quantile  # noqa: E402

from ovxai import export  # noqa: E402
from ovxai.metadata import ModelInfo  # noqa: E402
from ovxai.runtime import Explainer  # noqa: E402
from ovxai.serving.server import ServeOptions, deploy  # noqa: E402

PHOTO = ROOT / "samples/photos/coffee.jpg"
IMAGENET = ModelInfo(mean=(123.675, 116.28, 103.53), scale=(58.395, 57.12, 57.375))
RAY_NODE_IP = "127.0.0.2"  # loopback: Ray turns 127.0.0.1 into the machine's network address


# -- models ------------------------------------------------------------------------------------------------


def build_models(name: str, workdir: Path) -> tuple[Path, Path]:
    """(plain IR, patched IR) of a ``models/build.py`` recipe, exported once into ``workdir``."""
    import openvino as ov

    plain, patched = workdir / f"{name}.xml", workdir / f"{name}_xai.xml"
    if not (plain.exists() and patched.exists()):
        from models.build import build
        from ovxai.exporter.from_torch import to_onnx

        onnx_path = workdir / f"{name}.onnx"
        net, size = build(name)
        to_onnx(net, onnx_path, size, "dynamo")
        ov.save_model(ov.convert_model(str(onnx_path)), str(plain))  # FP16 weights, as users get them
        export(onnx_path, patched, info=IMAGENET)
    return plain, patched


# -- load --------------------------------------------------------------------------------------------------


def infer_body(tensor: np.ndarray, input_name: str) -> tuple[bytes, dict[str, str]]:
    """A v2 request with the tensor as binary data, all outputs asked for as binary (tritonclient's default)."""
    head = json.dumps(
        {
            "inputs": [{"name": input_name, "shape": list(tensor.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": tensor.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    return head + tensor.tobytes(), headers


class Outcome:
    """Requests sent under load, by result: status code, or 'lost' (no HTTP answer)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.results: Counter[str] = Counter()
        self.examples: dict[str, str] = {}  # the first answer of each kind other than 200
        self.lock = threading.Lock()

    def add(self, result: str, seconds: float, answer: bytes | str = b"") -> None:
        with self.lock:
            self.results[result] += 1
            if result == "200":
                self.latencies.append(seconds)
            elif result not in self.examples:
                text = answer if isinstance(answer, str) else answer[:300].decode(errors="replace")
                self.examples[result] = text


def load(
    port: int, path: str, body: bytes, headers: dict[str, str], concurrency: int, requests: int, max_s: float
) -> tuple[Outcome, float]:
    """``requests`` requests (at most ``max_s`` seconds) from ``concurrency`` clients; (outcome, wall s)."""
    outcome = Outcome()
    remaining = [requests]
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def take() -> bool:
        with lock:
            if remaining[0] <= 0 or time.perf_counter() > deadline[0]:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start_gate.wait()
        while take():
            began = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                answer = response.read()
                outcome.add(str(response.status), time.perf_counter() - began, answer)
                if response.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            except (OSError, http.client.HTTPException) as exc:
                outcome.add("lost", time.perf_counter() - began, f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + max_s
    began = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join(max_s + 70)
    return outcome, time.perf_counter() - began


def summary(outcome: Outcome, wall: float) -> dict[str, float]:
    lat = outcome.latencies or [float("nan")]
    return {
        "rps": len(outcome.latencies) / wall,
        "p50_ms": quantile(lat, 0.5) * 1e3,
        "p99_ms": quantile(lat, 0.99) * 1e3,
        "errors": sum(n for r, n in outcome.results.items() if r != "200"),
    }


def round_trip(port: int, path: str, requests: int) -> float:
    """p50 ms of a GET through the whole stack (proxy, replica, FastAPI) that runs no model."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        times.append(time.perf_counter() - began)
    conn.close()
    return quantile(times, 0.5) * 1e3


def in_process(explainer: Explainer, tensor: np.ndarray, requests: int) -> dict[str, float]:
    """One call at a time, as a server's single request would run it."""
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        explainer.session.infer(tensor)
        times.append(time.perf_counter() - began)
    return {"rps": len(times) / sum(times), "p50_ms": quantile(times, 0.5) * 1e3, "p99_ms": quantile(times, 0.99) * 1e3}


# -- the stack's own cost --------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_titled(prefix: str) -> list[int]:
    """This process's descendants (its Ray instance's workers) whose command line starts with ``prefix``
    (Ray titles its actors' processes ``ray::ProxyActor``); other jobs' Ray instances are left out."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                titles[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items() if title.startswith(prefix.encode()) and ours(pid)]


def sequential(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], n: int,
               pids: list[int]) -> tuple[float, list[float]]:  # fmt: skip
    """``n`` requests one at a time on one connection: (p50 ms, CPU ms per request of each of ``pids``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(3):
        conn.request(method, path, body, headers)
        conn.getresponse().read()
    before, times = [cpu_s(p) for p in pids], []
    for _ in range(n):
        began = time.perf_counter()
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - began)
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    cpu = [(cpu_s(p) - b) * 1e3 / n for p, b in zip(pids, before, strict=True)]
    conn.close()
    return quantile(times, 0.5) * 1e3, cpu


def stack_part(port: int, tiny_xml: Path, rounds: int, n: int = 100) -> dict[str, Any]:
    """The stack's cost with an engine that takes ~0.2 ms: p50 of a GET and of an inference one at a time,
    the in-process call, and the CPU ms per request of Ray Serve's proxy and of the replica (idle use
    subtracted): ``ovxai serve``'s defaults, batches that wait 5 ms, batching off, and the handlers on a
    second event loop in another thread (Ray's default)."""
    from ray import serve

    separate = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}
    second = {"ray_actor_options": {"num_cpus": 1.0, "runtime_env": {"env_vars": separate}}}
    setups = {
        "defaults": ServeOptions(str(tiny_xml), name="tiny"),
        "batches wait 5 ms": ServeOptions(str(tiny_xml), name="tiny5", batch_wait_ms=5),
        "batching off": ServeOptions(str(tiny_xml), name="tiny1", max_batch_size=1),
        "handlers on a second loop": ServeOptions(str(tiny_xml), name="tiny2", extra=second),
    }
    for options in setups.values():
        deploy(options, "127.0.0.1", port, route_prefix=f"/{options.name}")
    proxies = pids_titled("ray::ProxyActor")
    if not proxies:
        raise RuntimeError("no ray::ProxyActor process below this one")
    replicas = {k: json.loads(_get(port, f"/{o.name}/v1/info"))["pid"] for k, o in setups.items()}
    idle_began, idle = time.perf_counter(), {p: cpu_s(p) for p in [*proxies, *replicas.values()]}
    time.sleep(3.0)  # what the proxy and replicas use without requests (health checks, metrics)
    idle_rate = {p: (cpu_s(p) - c) / (time.perf_counter() - idle_began) for p, c in idle.items()}
    explainer = Explainer.load(tiny_xml)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    body, headers = infer_body(x, explainer.session.input_name)
    rows: dict[str, list[dict[str, float]]] = {}
    in_process_ms: list[float] = []
    for round_index in range(rounds):
        shift = round_index % len(setups)
        order = list(setups)[shift:] + list(setups)[:shift]
        for key in order:
            name, pids = setups[key].name, [*proxies, replicas[key]]
            for kind, method, path, data, head in (
                ("live", "GET", f"/{name}/v2/health/live", None, {}),
                ("infer", "POST", f"/{name}/v2/models/{name}/infer", body, headers),
            ):
                began = time.perf_counter()
                p50, cpu = sequential(port, method, path, data, head, n, pids)
                idle_ms = [idle_rate[p] * (time.perf_counter() - began) * 1e3 / n for p in pids]
                busy = [c - i for c, i in zip(cpu, idle_ms, strict=True)]
                proxy_ms, replica_ms = sum(busy[:-1]), busy[-1]
                rows.setdefault(f"{key}, {kind}", []).append(
                    {"p50_ms": p50, "proxy_cpu_ms": proxy_ms, "replica_cpu_ms": replica_ms}
                )
        in_process_ms.append(in_process(explainer, x, n)["p50_ms"])
    for options in setups.values():
        serve.delete(options.name)
    return {"rows": {k: _median(v) for k, v in rows.items()}, "in_process_p50_ms": statistics.median(in_process_ms)}


# -- the fault -----------------------------------------------------------------------------------------


def fault_run(port: int, name: str, seconds: float, run_load: Callable[[], tuple[Outcome, float]]) -> dict[str, Any]:
    """``run_load`` (concurrency 8 for ``seconds``) while one of the two replicas is killed after 2 s."""
    from ray import serve

    pids = set()
    for _ in range(200):  # both replicas' PIDs, from the replica that answers
        pids.add(json.loads(_get(port, f"/{name}/v1/info"))["pid"])
        if len(pids) == 2:
            break
    if len(pids) < 2:
        return {"error": f"found {len(pids)} replica(s), not 2"}
    victim = min(pids)
    killed_at: list[float] = []

    def kill_later() -> None:
        time.sleep(2.0)
        os.kill(victim, signal.SIGKILL)  # a replica process this benchmark's Ray started
        killed_at.append(time.perf_counter())

    killer = threading.Thread(target=kill_later)
    killer.start()
    outcome, wall = run_load()
    killer.join()
    recovered = None
    while time.perf_counter() - killed_at[0] < 90:
        status = serve.status().applications[name].deployments["ovxai"]
        if status.replica_states.get("RUNNING", 0) == 2 and status.status == "HEALTHY":
            recovered = time.perf_counter() - killed_at[0]
            break
        time.sleep(0.2)
    results = dict(outcome.results)
    return {
        "requests": sum(results.values()),
        "completed": results.pop("200", 0),
        "retryable_503": results.pop("503", 0),
        "lost": results.pop("lost", 0),
        "other": results,
        "answers": outcome.examples,
        "load_s": round(wall, 1),
        "recovered_s": None if recovered is None else round(recovered, 1),
    }


def runtime_load(url: str, tensor: np.ndarray, concurrency: int, seconds: float) -> tuple[Outcome, float]:
    """The remote runtime as the client (``Explainer.load(URL).session.infer``: it retries a 503, a
    non-JSON 500 and a dropped connection twice): what its callers see."""
    from ovxai.errors import OvxaiError

    session = Explainer.load(url).session
    outcome = Outcome()
    began = time.perf_counter()

    def client() -> None:
        while time.perf_counter() - began < seconds:
            start = time.perf_counter()
            try:
                session.infer(tensor)
                outcome.add("200", time.perf_counter() - start)
            except OvxaiError as exc:
                outcome.add("error", time.perf_counter() - start, str(exc))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 70)
    return outcome, time.perf_counter() - began


# -- bad input -------------------------------------------------------------------------------------------


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    data = conn.getresponse().read()
    conn.close()
    return data


def raw(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[str, bytes, float]:
    """Send a request as bytes; (status or what happened, answer body, seconds)."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        try:
            conn.sendall(head)
            if body:
                conn.sendall(body)
        except OSError as exc:
            note = f"send stopped ({type(exc).__name__})"
        else:
            note = ""
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
                top, _, rest = data.partition(b"\r\n\r\n")
                sizes = [v.split(b":")[1] for v in top.split(b"\r\n") if v.lower().startswith(b"content-length:")]
                if sizes and len(rest) >= int(sizes[0]):
                    break
        except OSError as exc:
            return f"no answer ({type(exc).__name__}){', ' + note if note else ''}", b"", time.perf_counter() - began
    seconds = time.perf_counter() - began
    if not data:
        return f"closed without an answer{', ' + note if note else ''}", b"", seconds
    top, _, rest = data.partition(b"\r\n\r\n")
    return top.split()[1].decode(), rest, seconds


def one_line_json(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return "no (" + (body[:40].decode(errors="replace") or "empty") + ")"
    return "yes" if isinstance(value, dict) and set(value) == {"error"} and "\n" not in value["error"] else "no"


def vm_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_head(path: str, length: int | str, **headers: str) -> bytes:
    """A POST's request line and headers, as bytes."""
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def bad_input(port: int, name: str, body: bytes, headers: dict[str, str], size: int) -> list[list[object]]:
    from PIL import Image

    pid = json.loads(_get(port, f"/{name}/v1/info"))["pid"]
    peak_before = vm_peak_mb(pid)
    explain, infer = f"/{name}/v1/explain", f"/{name}/v2/models/{name}/infer"
    photo = PHOTO.read_bytes()
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")  # 81 MP that compress to a few KB
    bomb = buffer.getvalue()
    input_name = json.loads(_get(port, f"/{name}/v2/models/{name}"))["inputs"][0]["name"]

    def tensor(name_: str, shape: list[int], datatype: str) -> tuple[str, bytes, float]:
        data = np.zeros(shape, np.float64 if datatype == "FP64" else np.float32).tobytes()
        spec = {"name": name_, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(data)}}
        head = json.dumps({"inputs": [spec]}).encode()
        length = {"Inference_Header_Content_Length": str(len(head))}
        return raw(port, request_head(infer, len(head) + len(data), **length), head + data)

    def post(path: str, data: bytes, length: int | str | None = None) -> Callable[[], tuple[str, bytes, float]]:
        return lambda: raw(port, request_head(path, len(data) if length is None else length), data)

    cases: list[tuple[str, Callable[[], tuple[str, bytes, float]]]] = [
        ("garbage bytes to /v1/explain", post(explain, os.urandom(4096))),
        ("garbage bytes to /infer", post(infer, os.urandom(4096))),
        ("empty body", post(explain, b"")),
        ("25 MB body (sent)", post(explain, b"\0" * 26214400)),
        ("wrong tensor name", lambda: tensor("image", [1, 3, size, size], "FP32")),
        ("wrong tensor shape", lambda: tensor(input_name, [1, 3, 64, 64], "FP32")),
        ("wrong tensor dtype", lambda: tensor(input_name, [1, 3, size, size], "FP64")),
        ("Content-Length: -1", post(explain, b"", "-1")),
        ("Content-Length: abc", post(explain, b"", "abc")),
        (f"9000 x 9000 PNG of {len(bomb) // 1024} KB", post(explain, bomb)),
        ("PNG answer, targets=top1", post(f"{explain}?targets=top1&format=png", photo)),
        ("PNG answer, targets=top100", post(f"{explain}?targets=top100&format=png", photo)),
    ]
    good = request_head(infer, len(body), Inference_Header_Content_Length=headers["Inference-Header-Content-Length"])
    rows: list[list[object]] = []
    for label, case in cases:
        status, answer, seconds = case()
        alive = raw(port, good, body)[0]
        shown = one_line_json(answer) if not status.startswith("2") else f"{len(answer) // 1024} KB PNG"
        rows.append([label, status, shown, f"{seconds * 1e3:.0f}", alive])
    # A client that never finishes its body, and a good request meanwhile.
    stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
    stalled.sendall(request_head(explain, 1000) + b"x" * 10)
    began = time.perf_counter()
    good_status, _, good_s = raw(port, request_head(explain, len(photo)), photo)
    data = b""
    while b"}" not in data and (chunk := stalled.recv(65536)):
        data += chunk
    stalled.close()
    top, _, rest = data.partition(b"\r\n\r\n")
    rows.append([
        "a body never finished (10 of 1000 bytes)", top.split()[1].decode() if top else "closed", one_line_json(rest),
        f"{(time.perf_counter() - began) * 1e3:.0f}", f"{good_status} in {good_s * 1e3:.0f} ms meanwhile",
    ])  # fmt: skip
    rows.append(
        ["replica peak memory (VmHWM)", "", "", "", f"{peak_before:.0f} MB before, {vm_peak_mb(pid):.0f} after"]
    )
    return rows


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a models/build.py recipe (default resnet18)")
    parser.add_argument("--workdir", type=Path, default=Path("out/bench_serving"), help="exported models")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=240, help="requests per configuration at concurrency 8")
    parser.add_argument("--max-s", type=float, default=15.0, help="longest load per configuration, seconds")
    parser.add_argument("--fault-s", type=float, default=8.0, help="length of the fault run, seconds")
    parser.add_argument("--quick", action="store_true", help="one round, a third of the requests")
    parser.add_argument("--parts", default="load,stack,fault,bad", help="any of load, stack, fault, bad")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    if args.quick:
        args.rounds, args.requests = 1, max(24, args.requests // 3)
    args.workdir.mkdir(parents=True, exist_ok=True)
    plain_xml, patched_xml = build_models(args.model, args.workdir)

    import ray
    from ray import serve

    explainer = Explainer.load(patched_xml)
    tensor = explainer.prepare(PHOTO).tensor
    size = tensor.shape[-1]
    body, headers = infer_body(tensor, explainer.session.input_name)
    port = _free_port()
    ray.init(address="local", num_cpus=12, include_dashboard=False, log_to_driver=False, _node_ip_address=RAY_NODE_IP)
    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    try:
        setups = {
            "plain": ServeOptions(str(plain_xml), name="plain", protocol_only=True),
            "patched": ServeOptions(str(patched_xml), name="patched"),
            "patched-wait5": ServeOptions(str(patched_xml), name="wait5", batch_wait_ms=5),
            "patched-nobatch": ServeOptions(str(patched_xml), name="nobatch", max_batch_size=1),
        }
        for options in setups.values():
            deploy(options, "127.0.0.1", port, route_prefix=f"/{options.name}")
        if "load" in args.parts:
            results |= load_part(port, setups, explainer, tensor, body, headers, args)
        if "stack" in args.parts:
            results["stack"] = stack_part(port, build_models("tiny", args.workdir)[1], args.rounds)
        if "fault" in args.parts:
            fault = ServeOptions(str(patched_xml), name="fault", replicas=2)
            deploy(fault, "127.0.0.1", port, route_prefix="/fault")
            path = "/fault/v2/models/fault/infer"
            results["fault"] = fault_run(
                port, "fault", args.fault_s, lambda: load(port, path, body, headers, 8, 100_000, args.fault_s)
            )
            url = f"http://127.0.0.1:{port}/fault/v2/models/fault"
            results["fault_runtime_client"] = fault_run(
                port, "fault", args.fault_s, lambda: runtime_load(url, tensor, 8, args.fault_s)
            )
            serve.delete("fault")
        if "bad" in args.parts:
            results["bad_input"] = bad_input(port, "patched", body, headers, size)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    report(results, args.model)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


def load_part(
    port: int,
    setups: dict[str, ServeOptions],
    explainer: Explainer,
    tensor: np.ndarray,
    body: bytes,
    headers: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    per_c = {1: max(20, args.requests // 4), 8: args.requests, 32: args.requests * 2}
    configs = [(s, c) for c in (1, 8, 32) for s in ("plain", "patched")]
    configs += [("patched-wait5", 1), ("patched-wait5", 8), ("patched-nobatch", 1), ("patched-nobatch", 8)]
    by_config: dict[str, list[dict[str, float]]] = {}
    baseline: list[dict[str, float]] = []
    batched: list[float] = []
    eight = np.repeat(tensor, 8, axis=0)
    for _ in range(2):  # warm-up: every replica and the in-process model run a few requests first
        for setup, _c in configs:
            name = setups[setup].name
            load(port, f"/{name}/v2/models/{name}/infer", body, headers, 2, 8, 10)
        in_process(explainer, tensor, 5)
    for round_index in range(args.rounds):
        shift = round_index % len(configs)
        for setup, c in configs[shift:] + configs[:shift]:
            name = setups[setup].name
            outcome, wall = load(port, f"/{name}/v2/models/{name}/infer", body, headers, c, per_c[c], args.max_s)
            by_config.setdefault(f"{setup} c={c}", []).append(summary(outcome, wall))
        baseline.append(in_process(explainer, tensor, per_c[1]))
        batched.append(8 * in_process(explainer, eight, max(3, per_c[1] // 8))["rps"])
    return {
        "load": {k: _median(v) for k, v in by_config.items()},
        "in_process": _median(baseline),
        "in_process_batch8_images_per_s": statistics.median(batched),
        "replicas": {s: json.loads(_get(port, f"/{o.name}/v1/info"))["served"] for s, o in setups.items()},
        "round_trip_ms": round_trip(port, "/patched/v2/health/live", 100),
    }


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def report(results: dict[str, Any], model: str) -> None:
    print(f"\n## Serving {model} on {results['machine']}\n")
    if "load" in results:
        load_rows, base = results["load"], results["in_process"]
        rows = [["in-process Explainer (one call at a time)", 1, f"{base['rps']:.1f}", f"{base['p50_ms']:.2f}",
                 f"{base['p99_ms']:.2f}", "", ""]]  # fmt: skip
        for key, r in load_rows.items():
            setup, c = key.split(" c=")
            plain = load_rows.get(f"plain c={c}")
            ratio = f"{r['rps'] / plain['rps']:.2f}" if plain and setup != "plain" else ""
            p50, p99 = f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"
            rows.append([setup, c, f"{r['rps']:.1f}", p50, p99, ratio, int(r["errors"])])
        header = ["served (medians over rounds)", "concurrency", "req/s", "p50 ms", "p99 ms", "x plain", "errors"]
        print(markdown_table(header, rows, "lrrrrrr"))
        one = load_rows["patched c=1"]
        on, off = load_rows["patched c=8"], load_rows["patched-nobatch c=8"]
        waited = load_rows["patched-wait5 c=1"]
        print(f"batches waiting 5 ms at concurrency 1: {waited['p50_ms']:.2f} ms p50 against {one['p50_ms']:.2f}")
        print(
            f"\nserving stack at concurrency 1: +{one['p50_ms'] - base['p50_ms']:.2f} ms p50 over the in-process call"
        )
        print(f"a GET through the stack that runs no model (/v2/health/live): {results['round_trip_ms']:.2f} ms p50")
        gain = on["rps"] / off["rps"]
        print(f"dynamic batching at concurrency 8: {on['rps']:.1f} vs {off['rps']:.1f} req/s ({gain:.2f}x);")
        print(
            f"in process, batch 8: {results['in_process_batch8_images_per_s']:.1f} images/s, batch 1: {base['rps']:.1f}"
        )
        for setup, served in results["replicas"].items():
            print(f"replica of {setup}: {json.dumps(served)}")
    if "stack" in results:
        stack = results["stack"]
        in_process_ms = stack["in_process_p50_ms"]
        print(f"\n## The stack's own cost (tiny model, one request at a time; in process {in_process_ms:.2f} ms)\n")
        rows = [[k, f"{r['p50_ms']:.2f}", f"{r['proxy_cpu_ms']:.2f}", f"{r['replica_cpu_ms']:.2f}"]
                for k, r in stack["rows"].items()]  # fmt: skip
        print(markdown_table(["handlers, request", "p50 ms", "proxy CPU ms/req", "replica CPU ms/req"], rows, "lrrr"))
    if "fault" in results:
        print(f"\n## A replica killed under load (concurrency 8)\n\nraw HTTP: {json.dumps(results['fault'])}")
        print(f"the remote runtime as the client: {json.dumps(results['fault_runtime_client'])}")
    if "bad_input" in results:
        print("\n## Bad input (then a good request)\n")
        header = ["case", "status", "one-line JSON", "ms", "server afterwards"]
        print(markdown_table(header, results["bad_input"], "llllr"))


if __name__ == "__main__":
    main()
