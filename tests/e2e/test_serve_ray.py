"""``ovxai serve`` on Ray Serve (replicas, clusters): the same handlers behind Serve's HTTP and gRPC proxies give
the same answers as in process; a replica replaced after its model file was deleted serves again (the files
travel in memory); a two-node cluster on loopback spreads replicas and drains on SIGTERM under load.

Ray's node address is 127.0.0.2: Ray turns 127.0.0.1 into the machine's network address, but leaves the rest of
the loopback range alone. Every test here is slow (Ray starts); each stops what it started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import NETS
from processes import OVXAI, descendants, free_port, request, start, stop
from runners import run

from ovxai.runtime import Explainer

pytest.importorskip("ray.serve")
triton_http = pytest.importorskip("tritonclient.http")
triton_grpc = pytest.importorskip("tritonclient.grpc")

from ovxai.serving.options import ServeOptions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "samples/photos"
SIZE = NETS["resnet"][1]
RAY_NODE_IP = "127.0.0.2"


@pytest.fixture(scope="module")
def deployed(patched: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One local Ray instance with the IR deployed from a copy of its files (HTTP and gRPC proxies)."""
    import ray
    from ray import serve

    from ovxai.serving.ray_host import SERVE_ENV, deploy

    folder = tmp_path_factory.mktemp("ray-served")
    for suffix in (".xml", ".bin"):
        shutil.copy(patched["xml"].with_suffix(suffix), folder / f"resnet_xai{suffix}")
    saved = {k: os.environ.get(k) for k in SERVE_ENV}
    os.environ.update(SERVE_ENV)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address=RAY_NODE_IP, log_to_driver=False)
    try:
        port, grpc_port = free_port(), free_port()
        options = ServeOptions(str(folder / "resnet_xai.xml"), max_batch_size=4)
        url = deploy(options, "127.0.0.1", port, grpc_port)
        yield {"base": url.split("/v2/")[0], "grpc": f"127.0.0.1:{grpc_port}", "model": folder / "resnet_xai.xml"}
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_ray_hosting_answers_as_the_embedded_server_does(deployed: dict[str, Any], patched: dict[str, Path]) -> None:
    x = np.random.default_rng(1).random((2, 3, SIZE, SIZE), dtype=np.float32)
    direct = run(patched["xml"], x, "openvino")
    photo = (PHOTOS / "coffee.jpg").read_bytes()
    local = Explainer.load(patched["xml"])
    expected = local.session.infer(local.prepare(photo).tensor)
    http = triton_http.InferenceServerClient(deployed["base"].removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(deployed["grpc"])
    for module, client in ((triton_http, http), (triton_grpc, grpc)):
        assert client.is_server_ready() and client.is_model_ready("resnet_xai")
        tensor = module.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("resnet_xai", [tensor])
        np.testing.assert_allclose(result.as_numpy("saliency_map"), direct["saliency_map"], atol=1e-5)
        images = module.InferInput("input", [1], "BYTES")
        images.set_data_from_numpy(np.array([photo], dtype=np.object_))
        result = client.infer("resnet_xai", [images])
        np.testing.assert_allclose(result.as_numpy("logits"), expected["logits"], atol=1e-4)
    meta = grpc.get_model_metadata("resnet_xai", as_json=True)
    assert [int(d) for d in meta["outputs"][1]["shape"]] == [-1, 10, 4, 4]
    with pytest.raises(Exception, match="NOT_FOUND"):
        grpc.get_model_metadata("other")
    info = json.loads(request(f"{deployed['base']}/v1/info")[2])
    assert info["model"] == "resnet_xai" and info["file"] == "resnet_xai.xml" and info["replica"] and info["node"]
    status, _, body = request(f"{deployed['base']}/v2/models/resnet_xai/infer", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested" in json.loads(body)["error"]


def test_a_replica_replaced_after_its_model_file_was_deleted_serves_again(deployed: dict[str, Any]) -> None:
    import ray

    for suffix in (".xml", ".bin"):
        deployed["model"].with_suffix(suffix).unlink()
    before = json.loads(request(f"{deployed['base']}/v1/info")[2])["replica"]
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("SERVE_REPLICA")]
    assert len(replicas) == 1
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, _, body = request(f"{deployed['base']}/v1/info", timeout=10)
        if status == 200 and json.loads(body)["replica"] != before:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("no new replica within 90 s")
    status, _, _ = request(f"{deployed['base']}/v1/explain", (PHOTOS / "coffee.jpg").read_bytes())
    assert status == 200


def test_two_node_cluster_spreads_replicas_and_drains_on_sigterm(patched: dict[str, Path]) -> None:
    """`ray start --head` and a second `ray start --address` on loopback, `ovxai serve --address` with two
    replicas of one CPU each on nodes of one CPU: one replica per node; SIGTERM under load answers every request
    in flight, then the command exits 0 and the cluster stays. Every process is ours to stop."""
    gcs, http_port, grpc_port = free_port(), free_port(), free_port()
    extra = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}  # else the head's proxy keeps to its node
    common = ["--node-ip-address", RAY_NODE_IP, "--num-cpus", "1", "--disable-usage-stats", "--block"]
    ray_cli = [str(Path(sys.executable).with_name("ray"))]
    procs: list[Any] = []
    address = f"{RAY_NODE_IP}:{gcs}"
    # `ray start --head` records its address for later `ray.init()` calls; a head stopped by force leaves it
    # behind. Put back what was there before, unless another cluster has written it since.
    latest = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray" / "ray_current_cluster"
    before = latest.read_text() if latest.is_file() else None
    env = {"RAY_AUTH_TOKEN": secrets.token_hex(32)} | extra  # one token for the cluster's processes
    try:
        head = start([*ray_cli, "start", "--head", "--port", str(gcs), "--include-dashboard", "false",
                      "--dashboard-agent-listen-port", str(free_port()), *common], **env)  # fmt: skip
        procs.append(head)
        _wait_for_gcs(head, address)
        procs.append(start([*ray_cli, "start", "--address", address, "--dashboard-agent-listen-port",
                            str(free_port()), *common], **env))  # fmt: skip
        serving = start(
            [*OVXAI, "serve", "--model", str(patched["xml"]), "--address", address, "--port", str(http_port),
             "--grpc-port", str(grpc_port), "--replicas", "2", "--replica-cpus", "1"], **env,
        )  # fmt: skip
        procs.append(serving)
        from processes import Lines

        Lines(serving).wait_for("serving resnet_xai", 180)
        base = f"http://127.0.0.1:{http_port}"
        nodes = {json.loads(request(f"{base}/v1/info")[2])["node"] for _ in range(40)}
        assert len(nodes) == 2, nodes  # each node runs one replica
        remote = Explainer.load(f"{base}/v2/models/resnet_xai")
        assert remote.explain(PHOTOS / "coffee.jpg")[0].top[0].label.startswith("thing")
        x = np.random.default_rng(2).random((8, 3, SIZE, SIZE), dtype=np.float32)
        results: list[Any] = []

        def one() -> None:
            client = triton_http.InferenceServerClient(f"127.0.0.1:{http_port}")
            tensor = triton_http.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            try:
                results.append(client.infer("resnet_xai", [tensor]).as_numpy("logits").shape)
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        serving.send_signal(signal.SIGTERM)  # removes its application, draining it; the cluster stays
        for thread in threads:
            thread.join(90)
        assert results == [(8, 10)] * 8, results
        assert serving.wait(90) == 0
        assert head.poll() is None
    finally:
        stop(procs, {pid for p in procs for pid in descendants(p.pid)}, grace=10)
        if latest.is_file() and latest.read_text().strip() == address:
            if before is None:
                latest.unlink()
            else:
                latest.write_text(before)


def _wait_for_gcs(head: Any, address: str, seconds: float = 60) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            time.sleep(2)  # the GCS listens before it serves; give the head's raylet its start
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"no Ray head at {address} within {seconds} s")
