"""The runtime as a client of a served model (``Explainer.load(URL)``, ``ovxai explain --model URL``) against
servers that misbehave: one that accepts a request and never answers (a bounded wait, one request, one
line), one that answers 200 with HTML, a URL with a password (sent as HTTP basic authentication, never
shown), ports that are not ports, and options that do not apply to a URL (or only to one).

The server is a small Open Inference Protocol server on loopback, started and stopped by each test: its
metadata and answers come from the real patched model, run in OpenVINO."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runners import cli_fails

from ovxai.cli import main
from ovxai.errors import OvxaiError
from ovxai.runtime import Explainer
from ovxai.runtime.backends import OIP_DATATYPES, OpenVinoSession, redact

pytest.importorskip("tritonclient.http")

PHOTO = Path(__file__).resolve().parents[2] / "samples/photos/coffee.jpg"
DATATYPES = {v: k for k, v in OIP_DATATYPES.items()}


@dataclass
class Behaviour:
    """How the server answers: ``silent`` infer requests are held until the test ends; ``html`` answers
    every request with a 200 web page; ``login`` is the 'user:password' it requires, if any."""

    silent: bool = False
    html: bool = False
    login: str | None = None
    infers: int = 0  # infer requests received
    release: threading.Event = field(default_factory=threading.Event)


def dims(shape: list[int | None]) -> list[int]:
    return [-1 if d is None else d for d in shape]


def serve(model: Path, behaviour: Behaviour) -> tuple[ThreadingHTTPServer, str]:
    session = OpenVinoSession(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    metadata = {
        "name": "m",
        "platform": "openvino",
        "inputs": [{"name": session.input_name, "datatype": "FP32", "shape": [-1, *dims(session.input_shape[1:])]}],
        "outputs": [
            {"name": name, "datatype": DATATYPES[session.output_dtypes[name]], "shape": [-1, *dims(shape[1:])]}
            for name, shape in session.output_shapes.items()
        ],
        "parameters": {"model_info mean_values": "120 110 100", "model_info scale_values": "60 60 60"},
    }
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, status: int, body: bytes, kind: str = "application/json", **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def allowed(self) -> bool:
            if behaviour.html:
                self.answer(200, b"<html><body>It works!</body></html>", "text/html")
                return False
            if behaviour.login is not None:
                expected = "Basic " + base64.b64encode(behaviour.login.encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.answer(401, json.dumps({"error": "wrong user or password"}).encode())
                    return False
            return True

        def do_GET(self) -> None:
            if self.allowed():
                ready = self.path.endswith("/ready")
                self.answer(200, b"" if ready else json.dumps(metadata).encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not self.allowed():
                return
            with lock:
                behaviour.infers += 1
            if behaviour.silent:
                behaviour.release.wait(60)
                return
            head_length = int(self.headers.get("Inference-Header-Content-Length") or len(body))
            request = json.loads(body[:head_length])
            (tensor,) = request["inputs"]
            x = np.frombuffer(body[head_length:], np.float32).reshape(tensor["shape"])
            outputs = session.infer(x)
            listed = [
                {"name": n, "datatype": DATATYPES[str(a.dtype)], "shape": list(a.shape), "data": a.ravel().tolist()}
                for n, a in outputs.items()
            ]
            self.answer(200, json.dumps({"model_name": "m", "outputs": listed}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def server(patched: dict[str, Path]) -> Iterator[tuple[Behaviour, str]]:
    """(its behaviour, to change; its host:port), stopped at the end."""
    behaviour = Behaviour()
    running, address = serve(patched["xml"], behaviour)
    try:
        yield behaviour, address
    finally:
        behaviour.release.set()
        running.shutdown()
        running.server_close()


def test_a_silent_server_costs_one_bounded_wait(server: tuple[Behaviour, str], tmp_path: Path, capsys) -> None:
    """It accepts the inference and never answers: one request, one wait of the timeout, one line —
    where three tries of 60 s each took 181.6 s."""
    behaviour, address = server
    url = f"http://{address}/v2/models/m"
    explainer = Explainer.load(url, timeout=1)
    assert explainer.labels is None and explainer.preprocessing.mean == (120.0, 110.0, 100.0)
    behaviour.silent = True
    with pytest.raises(OvxaiError, match=rf"the server at {address} did not answer within 1 s to run 'm'") as caught:
        explainer.explain(PHOTO)
    assert "\n" not in str(caught.value) and behaviour.infers == 1  # not tried again
    out = tmp_path / "out"
    err = cli_fails(capsys, "explain", "--model", url, "--timeout", "1.5", "--image", str(PHOTO), "--out", str(out))
    assert "did not answer within 1.5 s" in err and behaviour.infers == 2
    assert not out.exists()


def test_a_served_model_explains_like_the_file(server: tuple[Behaviour, str], patched, tmp_path: Path, capsys) -> None:
    _, address = server
    remote, local = Explainer.load(f"http://{address}/v2/models/m"), Explainer.load(patched["xml"])
    got, want = remote.explain(PHOTO, "top2")[0], local.explain(PHOTO, "top2")[0]
    assert [p.class_id for p in got.top] == [p.class_id for p in want.top]
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-6)


def test_a_password_in_the_url_logs_in_and_is_never_shown(
    server: tuple[Behaviour, str], tmp_path: Path, capsys
) -> None:
    behaviour, address = server
    behaviour.login = "ann:s3cret:pw"
    url = f"http://ann:s3cret%3Apw@{address}/v2/models/m"  # a ':' in the password, percent-encoded
    out = tmp_path / "out"
    assert main(["explain", "--model", url, "--image", str(PHOTO), "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "s3cret" not in said.out + said.err
    summary = (out / "summary.json").read_text()
    assert "s3cret" not in summary and json.loads(summary)["model"] == f"http://ann:***@{address}/v2/models/m"
    wrong = f"http://ann:guess3d@{address}/v2/models/m"
    for shown in (
        cli_fails(capsys, "explain", "--model", wrong, "--image", str(PHOTO), "--out", str(out)),
        cli_fails(capsys, "explain", "--model", wrong + "/infer", "--image", str(PHOTO), "--out", str(out)),
    ):
        assert "guess3d" not in shown, shown
    assert "wrong user or password" in shown or "is not a model URL" in shown
    assert redact("https://u:p@h:1/v2/models/m?x") == "https://u:***@h:1/v2/models/m?x"
    assert redact("http://h:1/v2/models/m") == "http://h:1/v2/models/m"


def test_what_is_not_an_inference_server_is_one_line(server: tuple[Behaviour, str], tmp_path: Path, capsys) -> None:
    behaviour, address = server
    behaviour.html = True
    args = ["--image", str(PHOTO), "--out", str(tmp_path / "out")]
    err = cli_fails(capsys, "explain", "--model", f"http://{address}/v2/models/m", *args)
    assert f"the server at {address} gave an answer to read the metadata of 'm' that is not the Open Inference" in err
    for port in ("99999", "abc", "0", ""):
        err = cli_fails(capsys, "explain", "--model", f"http://127.0.0.1:{port}/v2/models/m", *args)
        assert f"'{port}' in 'http://127.0.0.1:{port}/v2/models/m' is not a TCP port" in err


def test_options_for_the_other_kind_of_model_are_refused(patched, server: tuple[Behaviour, str], tmp_path) -> None:
    _, address = server
    url = f"http://{address}/v2/models/m"
    with pytest.raises(OvxaiError, match="device= CPU means nothing for a model URL"):
        Explainer.load(url, device="CPU")  # even the default: it would be silently ignored
    with pytest.raises(OvxaiError, match="config= means nothing for a model URL"):
        Explainer.load(url, config={})
    with pytest.raises(OvxaiError, match="throughput= means nothing for a model URL"):
        Explainer.load(url, throughput=True)
    with pytest.raises(OvxaiError, match="timeout= applies to a served model"):
        Explainer.load(patched["xml"], timeout=5)
    for bad in (0, -1, float("nan"), True, "5"):
        with pytest.raises(OvxaiError, match="is not a number of seconds"):
            Explainer.load(url, timeout=bad)  # type: ignore[arg-type]


def test_cli_options_for_the_other_kind_of_model_are_refused(patched, tmp_path: Path, capsys) -> None:
    args = ["--image", str(PHOTO), "--out", str(tmp_path / "out")]
    url = "http://127.0.0.1:9/v2/models/m"  # never reached: the options are checked first
    err = cli_fails(capsys, "explain", "--model", url, "--device", "GPU", *args)
    assert "--device applies to a model file" in err
    err = cli_fails(capsys, "explain", "--model", str(patched["xml"]), "--timeout", "5", *args)
    assert "--timeout applies to a served model" in err
    assert "--timeout 0.0 is not a number of seconds" in cli_fails(
        capsys, "explain", "--model", url, "--timeout", "0", *args
    )
    assert not (tmp_path / "out").exists()
