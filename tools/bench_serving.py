"""``ovxai serve`` on loopback against the in-process runtime: what the serving stack costs and what it delivers.

What it measures (a hand-run benchmark, not a test; every count and wait is bounded):

1. **The stack's own cost** (``stack``): a 32 x 32 model whose inference takes ~0.2 ms, one request at a time,
   p50 of each way in minus the in-process call's p50 (``session.infer`` on the same tensor): the embedded
   server's REST with binary tensors (``http.client`` on a keep-alive connection), its gRPC (the generated stub
   on one channel), both through the stock ``tritonclient.http``/``tritonclient.grpc`` clients, and the same
   deployment on Ray Serve (its HTTP and gRPC proxies) with Ray Serve's latency settings. Also a GET that runs
   no model, and the same REST app behind FastAPI (the framework the Ray ingress used) to say what it costs.
2. **Throughput** (``throughput``): a ResNet-18 layout at 224 (random weights, patched; OpenVINO f32): the
   in-process ``Explainer``'s best throughput over batch sizes 1, 2, 4, 8 (``session.infer`` back to back), and
   the embedded server at concurrency 8, one image per request (REST binary through ``http.client``, and
   tritonclient's HTTP and gRPC clients), with p50 and p99.
3. **Memory under a burst** (``memory``): 20 concurrent requests of ~19 MiB to the same server, as JSON and then
   as binary tensors: how many were answered 200 and how many 503 (the in-flight budget), and the server's RSS
   at the start, at its peak and after each burst.

Servers run as their own processes; the load generator is this process's client threads, each pinned to the
last core where the machine has more than one (``os.sched_setaffinity``, as ``taskset`` does), so that it does
not take the engine's cores: the server, and the in-process engine measured here, are left free to use them all.
Variants run in rotating order, ``--rounds`` times; the report gives the median over rounds, and the machine's
load average before and after. Ray Serve's ways are measured with Ray running and the embedded ones without it
(Ray's own processes take CPU all the time), each group beside its own in-process baseline. Run from the
repository root::

    .venv/bin/python tools/bench_serving.py                  # every part (about 8 minutes on 2 cores)
    .venv/bin/python tools/bench_serving.py --part stack --rounds 3
    .venv/bin/python tools/bench_serving.py --json out/bench_serving.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
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

IMAGENET = ModelInfo(mean=(123.675, 116.28, 103.53), scale=(58.395, 57.12, 57.375))
RAY_NODE_IP = "127.0.0.2"  # loopback: Ray turns 127.0.0.1 into the machine's network address


def build_model(name: str, workdir: Path) -> Path:
    """The patched IR of a ``models/build.py`` recipe, exported once into ``workdir``."""
    patched = workdir / f"{name}_xai.xml"
    if not patched.exists():
        from models.build import build
        from ovxai.exporter.from_torch import to_onnx

        workdir.mkdir(parents=True, exist_ok=True)
        onnx_path = workdir / f"{name}.onnx"
        net, size = build(name)
        to_onnx(net, onnx_path, size, "dynamo")
        export(onnx_path, patched, info=IMAGENET)
    return patched


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- servers -----------------------------------------------------------------------------------------------


class Embedded:
    """``ovxai serve`` in process (no Ray) as a child process; ``fastapi=True``: the same handlers behind a
    FastAPI app (for its cost only)."""

    def __init__(self, model: Path, fastapi: bool = False) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        if fastapi:
            program = _FASTAPI.format(model=str(model), port=self.port)
        else:
            program = (
                "from ovxai.serving.embedded import serve; from ovxai.serving.options import ServeOptions; "
                f"serve(ServeOptions({str(model)!r}), '127.0.0.1', {self.port}, {self.grpc_port}, "
                "lambda url, grpc: print('serving', flush=True))"
            )
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "serving" in line, line

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)


# The same Handlers behind FastAPI, routes as the old Ray ingress had them (for the framework's cost).
_FASTAPI = """
import asyncio, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ovxai.serving.handlers import Handlers
from ovxai.serving.options import ServeOptions
handlers = Handlers(ServeOptions({model!r}))
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

@app.get("/v2/health/live")
async def live():
    return {{"live": True}}

@app.post("/v2/models/{{name}}/infer")
async def infer(name: str, request: Request):
    handlers.spec.check_model(name)
    body = await request.body()
    data, headers = await handlers.infer_rest(body, request.headers.get("inference-header-content-length"))
    return Response(data, headers=headers)

config = uvicorn.Config(app, port={port}, host="127.0.0.1", loop="uvloop", http="httptools", lifespan="off",
                        access_log=False, log_level="warning")
server = uvicorn.Server(config)
async def main():
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print("serving", flush=True)
    await task
asyncio.run(main())
"""


class OnRay:
    """The same model deployed on a local Ray Serve instance (HTTP and gRPC proxies), with ``ovxai serve``'s
    settings (Serve's latency recommendations) or, ``defaults=True``, with Ray Serve's own defaults."""

    def __init__(self, model: Path, defaults: bool = False) -> None:
        import ray

        from ovxai.serving.options import ServeOptions
        from ovxai.serving.ray_host import SERVE_ENV, deploy

        for key in SERVE_ENV:
            os.environ.pop(key, None)
        extra: dict[str, Any] = {"ray_actor_options": {"num_cpus": 1.0}} if defaults else {}
        if not defaults:
            os.environ.update(SERVE_ENV)
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address=RAY_NODE_IP,
                 log_to_driver=False)  # fmt: skip
        self.port, self.grpc_port = free_port(), free_port()
        deploy(ServeOptions(str(model), extra=extra), "127.0.0.1", self.port, self.grpc_port)

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


# -- clients -----------------------------------------------------------------------------------------------


def rest_body(tensor: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A v2 request with the tensor as binary data, all outputs asked for as binary (tritonclient's default)."""
    head = json.dumps({"inputs": [{"name": "input", "shape": list(tensor.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": tensor.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    return head + tensor.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


Call = Callable[[], None]


def rest_call(port: int, name: str, tensor: np.ndarray) -> Call:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body, headers = rest_body(tensor)
    path = f"/v2/models/{name}/infer"

    def call() -> None:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    return call


def live_call(port: int) -> Call:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call() -> None:
        conn.request("GET", "/v2/health/live")
        response = conn.getresponse()
        response.read()
        assert response.status == 200

    return call


def grpc_call(port: int, name: str, tensor: np.ndarray) -> Call:
    """The generated stub on one channel: the least a gRPC client can do."""
    import grpc

    from ovxai.serving.grpc_messages import service_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 2**30)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name=name)
    request.inputs.add(name="input", datatype="FP32", shape=list(tensor.shape))
    request.raw_input_contents.append(tensor.tobytes())

    def call() -> None:
        stub.ModelInfer(request)

    return call


def triton_call(kind: str, port: int, name: str, tensor: np.ndarray) -> Call:
    if kind == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module  # type: ignore[no-redef]
    client = client_module.InferenceServerClient(f"127.0.0.1:{port}")
    tensor_input = client_module.InferInput("input", list(tensor.shape), "FP32")
    tensor_input.set_data_from_numpy(tensor)

    def call() -> None:
        client.infer(name, [tensor_input])

    return call


GENERATOR_CORES: set[int] | None = None  # where client threads run (None: anywhere)


def on_generator_core(work: Callable[[], Any]) -> Any:
    """``work()`` on a thread pinned to the load generator's core (its result, or its exception raised here)."""
    result: list[Any] = []

    def run() -> None:
        if GENERATOR_CORES:
            os.sched_setaffinity(0, GENERATOR_CORES)  # this thread only
        try:
            result.append(work())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def sequential(make: Callable[[], Call], n: int, pinned: bool = True) -> list[float]:
    """``n`` calls one after the other (after one to warm the connection): their times."""

    def work() -> list[float]:
        call = make()
        call()
        times = []
        for _ in range(n):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        return times

    return on_generator_core(work) if pinned else work()


def concurrent(make: Callable[[], Call], concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` clients (each its own connection) calling for ``seconds``: req/s, p50, p99 (ms)."""
    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client() -> None:
        if GENERATOR_CORES:
            os.sched_setaffinity(0, GENERATOR_CORES)
        call = make()  # each thread its own client: tritonclient.http's is bound to the thread that made it
        call()
        mine = []
        gate.wait()
        try:
            while time.perf_counter() < deadline[0]:
                began = time.perf_counter()
                call()
                mine.append(time.perf_counter() - began)
        except Exception as exc:
            failures.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join(seconds + 120)
    wall = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed: {failures[0]!r}")
    return {"rps": len(latencies) / wall, "p50_ms": quantile(latencies, 0.5) * 1e3,
            "p99_ms": quantile(latencies, 0.99) * 1e3}  # fmt: skip


def p50_ms(times: list[float]) -> float:
    return quantile(times, 0.5) * 1e3


# -- the parts ---------------------------------------------------------------------------------------------


def stack_part(model: Path, rounds: int, n: int, with_ray: bool) -> dict[str, Any]:
    """p50 per way in, and the in-process call's beside them, each round; medians over rounds."""
    explainer = Explainer.load(model)
    tensor = explainer.prepare(np.zeros((32, 32, 3), np.uint8)).tensor
    name = model.stem

    def in_process() -> Call:
        return lambda: explainer.session.infer(tensor) and None

    def measure(ways: dict[str, Callable[[], Call]]) -> dict[str, float]:
        results: dict[str, list[float]] = {way: [] for way in ways}
        for round_ in range(rounds):
            order = list(ways)
            for way in order[round_ % len(order) :] + order[: round_ % len(order)]:
                results[way].append(p50_ms(sequential(ways[way], n, pinned=way != "in process")))
        return {way: statistics.median(values) for way, values in results.items()}

    embedded, fastapi = Embedded(model), Embedded(model, fastapi=True)
    try:
        stack = measure({
            "in process": in_process,
            "embedded REST binary": lambda: rest_call(embedded.port, name, tensor),
            "embedded gRPC": lambda: grpc_call(embedded.grpc_port, name, tensor),
            "embedded tritonclient.http": lambda: triton_call("http", embedded.port, name, tensor),
            "embedded tritonclient.grpc": lambda: triton_call("grpc", embedded.grpc_port, name, tensor),
            "embedded GET /v2/health/live": lambda: live_call(embedded.port),
            "FastAPI app, REST binary": lambda: rest_call(fastapi.port, name, tensor),
            "FastAPI app, GET /v2/health/live": lambda: live_call(fastapi.port),
        })  # fmt: skip
    finally:
        embedded.close()
        fastapi.close()
    for defaults in (False, True) if with_ray else ():
        ray = OnRay(model, defaults)
        label = "Ray Serve" + (" (Ray's defaults)" if defaults else "")
        try:
            ray_ways = measure({
                "in process": in_process,
                f"{label} REST binary": lambda ray=ray: rest_call(ray.port, name, tensor),
                f"{label} gRPC": lambda ray=ray: grpc_call(ray.grpc_port, name, tensor),
                f"{label} GET /v2/health/live": lambda ray=ray: live_call(ray.port),
            })  # fmt: skip
        finally:
            ray.close()
        stack[f"in process, with Ray running{' (defaults)' if defaults else ''}"] = ray_ways.pop("in process")
        stack |= ray_ways
    return stack


def throughput_part(model: Path, rounds: int, seconds: float) -> dict[str, Any]:
    explainer = Explainer.load(model)
    image = explainer.prepare(np.zeros((224, 224, 3), np.uint8)).tensor
    name = model.stem
    server = Embedded(model)
    results: dict[str, list[dict[str, float]]] = {}

    def engine(batch: int) -> dict[str, float]:
        tensor = np.repeat(image, batch, axis=0)
        explainer.session.infer(tensor)
        began, count = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            explainer.session.infer(tensor)
            count += batch
        return {"rps": count / (time.perf_counter() - began)}

    variants: dict[str, Callable[[], dict[str, float]]] = {
        f"in process, batch {b}": (lambda b=b: engine(b))
        for b in (1, 2, 4, 8)  # type: ignore[misc]
    }
    clients: dict[str, Callable[[], Call]] = {
        "embedded REST binary": lambda: rest_call(server.port, name, image),
        "embedded gRPC": lambda: grpc_call(server.grpc_port, name, image),
        "tritonclient.http": lambda: triton_call("http", server.port, name, image),
        "tritonclient.grpc": lambda: triton_call("grpc", server.grpc_port, name, image),
    }
    for way, make in clients.items():
        for concurrency in (8, 1) if way == "embedded REST binary" else (8,):
            variants[f"{way}, concurrency {concurrency}"] = lambda m=make, c=concurrency: concurrent(m, c, seconds)
    try:
        for round_ in range(rounds):
            order = list(variants)
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for variant in order:
                results.setdefault(variant, []).append(variants[variant]())
        info = json.loads(_get(server.port, "/v1/info"))
    finally:
        server.close()
    medians = {v: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for v, rows in results.items()}
    return {"variants": medians, "served": info["served"]}


def memory_part(model: Path) -> dict[str, Any]:
    """20 concurrent requests of ~19 MiB (JSON, then binary) against the embedded server: statuses, its RSS before,
    at the peak (VmHWM) and after each burst."""
    explainer = Explainer.load(model)
    image = explainer.prepare(np.zeros((224, 224, 3), np.uint8)).tensor
    server = Embedded(model)
    images = 19 * 2**20 // (image.size * 4)  # JSON text of ~19 MiB (4 bytes per number: '0.5,')
    tensor = np.repeat(image * 0, images, axis=0)
    head = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(tensor.shape)}]}
    json_body = json.dumps({**head, "outputs": [{"name": "logits"}]}).replace("]}]", '], "data": DATA}]')
    json_body = json_body.replace("DATA", "[" + ",".join(["0.5"] * tensor.size) + "]")
    binary_tensor = np.repeat(image, 19 * 2**20 // image.nbytes, axis=0)
    bodies = {"JSON": (json_body.encode(), {}), "binary": rest_body(binary_tensor)}

    def rss(field: str) -> float:
        for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    results: dict[str, Any] = {"rss_start_mib": rss("VmRSS")}
    try:
        for kind, (body, headers) in bodies.items():
            statuses: list[int] = []

            def one(body: bytes = body, headers: dict[str, str] = headers, statuses: list[int] = statuses) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
                conn.request("POST", f"/v2/models/{model.stem}/infer", body, headers)
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)

            threads = [threading.Thread(target=one) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(600)
            time.sleep(1)
            counts = {str(k): statuses.count(k) for k in sorted(set(statuses))}
            results[kind] = {"MiB": round(len(body) / 2**20, 1), "statuses": counts,
                             "rss_peak_mib": rss("VmHWM"), "rss_after_mib": rss("VmRSS")}  # fmt: skip
    finally:
        server.close()
    return results


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    data = conn.getresponse().read()
    conn.close()
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("stack", "throughput", "memory", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per way and round (stack)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per variant and round (throughput)")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray Serve hosting out")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out/bench_serving", help="exported models")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    global GENERATOR_CORES
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # client threads on the last core; the servers and the in-process engine anywhere
        GENERATOR_CORES = {cores[-1]}
    import openvino as ov

    results: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "cpu": ov.Core().get_property("CPU", "FULL_DEVICE_NAME"),
        "cores": len(cores),
        "generator_core": cores[-1] if len(cores) > 1 else None,
    }
    if args.part in ("stack", "all"):
        results["stack"] = stack_part(build_model("tiny", args.workdir), args.rounds, args.requests, not args.no_ray)
    if args.part in ("throughput", "all"):
        results["throughput"] = throughput_part(build_model("resnet18", args.workdir), args.rounds, args.seconds)
    if args.part in ("memory", "all"):
        results["memory"] = memory_part(build_model("resnet18", args.workdir))
    results["load_after"] = os.getloadavg()
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, Any]) -> None:
    print(f"\n{results['cpu']}, {results['cores']} cores; load average before {results['load_before'][0]:.1f}, "
          f"after {results['load_after'][0]:.1f}; OpenVINO f32")  # fmt: skip
    if "stack" in results:
        stack = results["stack"]
        rows = []
        for way, ms in stack.items():
            base = stack["in process"]
            if way.startswith("Ray"):
                base = stack["in process, with Ray running" + (" (defaults)" if "defaults" in way else "")]
            rows.append([way, f"{ms:.3f}", "" if way.startswith("in process") else f"{ms - base:+.3f}"])
        print("\nThe stack's own cost (tiny model, one request at a time; p50, median over rounds)\n")
        print(markdown_table(["way in", "p50 ms", "over in process"], rows, "lrr"))
    if "throughput" in results:
        variants = results["throughput"]["variants"]
        best = max(v["rps"] for k, v in variants.items() if k.startswith("in process"))
        rows = [
            [k, f"{v['rps']:.1f}", f"{v['rps'] / best:.2f}", *(f"{v[q]:.1f}" if q in v else "" for q in ("p50_ms", "p99_ms"))]  # noqa: E501
            for k, v in variants.items()
        ]  # fmt: skip
        print("\nResNet-18 (224, patched; images/s, median over rounds)\n")
        print(markdown_table(["variant", "images/s", "x best in process", "p50 ms", "p99 ms"], rows, "lrrrr"))
        print(f"\nserved: {results['throughput']['served']}")
    if "memory" in results:
        print(f"\n20 concurrent large requests, server RSS MiB: {json.dumps(results['memory'])}")


if __name__ == "__main__":
    main()
