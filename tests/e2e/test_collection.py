"""``ovxai explain --ray``: a collection explained by a pool of Ray actors, against the in-process
``Explainer.explain_many`` on the same images (same top-k, equal maps and overlays); bad images (garbage, a
truncated PNG, a missing path in a list file) reported and skipped; a local Ray instance started and stopped
by the command; an existing Ray head (``--address``) left running; an address or token the cluster does not
take, one line within seconds; SIGTERM to the driver, complete lines kept, and a rerun that resumes or
starts clean. Ray stays on loopback (127.0.0.2, as in
tests/e2e/test_serve.py, whose Ray head fixture and process helpers are reused here)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from runners import cli_fails

from ovxai.cli import main
from ovxai.errors import OvxaiError
from ovxai.runtime import Explainer, pictures
from ovxai.serving.collection import expand_lists, read_list

pytest.importorskip("ray.data")
from test_serve import cluster  # noqa: F401 - the serving tests' Ray head on loopback, reused by --address

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "samples/photos"
BAD = {"garbage.jpg": "unknown format", "truncated.png": "truncated", "missing.jpg": "not found"}


@pytest.fixture
def collection(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """(the --image arguments, the images in input order): a folder with two photos, garbage bytes and a
    truncated PNG, then a list file naming two more photos and a missing one."""
    folder, more = tmp_path / "photos", tmp_path / "more"
    folder.mkdir()
    more.mkdir()
    for name in ("chelsea_cat.jpg", "astronaut.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    for name in ("coffee.jpg", "rocket.jpg"):
        shutil.copy(PHOTOS / name, more / name)
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    png = io.BytesIO()
    Image.open(PHOTOS / "coffee.jpg").save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    listed = tmp_path / "list.txt"
    listed.write_text(f"more/coffee.jpg\n# not an image\n\nmore/missing.jpg\n{more / 'rocket.jpg'}\n")
    order = [folder / n for n in ("astronaut.jpg", "chelsea_cat.jpg", "garbage.jpg", "truncated.png")]
    return [folder, listed], [*order, more / "coffee.jpg", more / "missing.jpg", more / "rocket.jpg"]


def check_results(out: Path, model: Path, images: list[Path]) -> None:
    """results.jsonl holds one line per image in input order, and each explained image's top-k, maps and
    overlay are those of the in-process explain_many on the same file; the bad ones say why."""
    explainer = Explainer.load(model)
    skipped: list[str] = []
    expected = {
        r.source: r for r in explainer.explain_many(images, "top1", 5, on_error=lambda item, _: skipped.append(item))
    }
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(len(images)))
    assert [line["image"] for line in lines] == [str(p) for p in images]
    for line in lines:
        if Path(line["image"]).name in BAD:
            assert BAD[Path(line["image"]).name] in line["error"] and line["image"] in line["error"], line
            assert Path(line["image"]) in skipped
            continue
        result = expected[line["image"]]
        assert line["top"] == [vars(p) for p in result.top]
        assert line["targets"] == [vars(p) for p in result.targets]
        maps = np.load(out / line["map"])
        assert maps.dtype == np.float32 and np.array_equal(maps, result.maps)
        (overlay,) = line["overlays"]
        assert (out / overlay).read_bytes() == pictures.encode(result.overlay(0), "jpeg")
    assert len(expected) == 4 and len(skipped) == 3


def ray_env(token: str | None = None) -> dict[str, str]:
    """A child's environment: no inherited cluster address, no usage reporting, this repository importable;
    with ``token``, Ray's token authentication with that token (nothing written to ~/.ray)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    if token:
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    return env


def with_token(token: str) -> list[int]:
    """Live processes whose environment holds ``token``: every process of a Ray instance started with it."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def explain(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ovxai.cli", "explain", "--ray", "--actors", "2", "--batch-size", "2", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, start_new_session=True)


def check_output(done: subprocess.CompletedProcess[str]) -> None:
    """Exit 1 (some images skipped), one warning line per bad image, no progress bar off a terminal."""
    assert done.returncode == 1, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("ovxai explain: warning: skipped")]
    assert len(warnings) == 3, done.stderr
    assert "\r" not in done.stderr and "image/s" not in done.stderr, done.stderr  # no tqdm frames in a log
    assert "explained 4 image(s)" in done.stdout and "skipped 3" in done.stdout, done.stdout


# -- without Ray ----------------------------------------------------------------------------------------


def test_list_files_are_relative_to_their_folder(tmp_path: Path) -> None:
    listed = tmp_path / "sub" / "list.lst"
    listed.parent.mkdir()
    listed.write_text("# photos\n a.jpg \n\n../b.png\n/abs/c.jpg\n")
    assert read_list(listed) == [listed.parent / "a.jpg", listed.parent / "../b.png", Path("/abs/c.jpg")]
    assert expand_lists([tmp_path, listed, tmp_path / "d.jpg"]) == [tmp_path, *read_list(listed), tmp_path / "d.jpg"]
    with pytest.raises(OvxaiError, match=r"list file '.*nothing\.txt' not found"):
        expand_lists([tmp_path / "nothing.txt"])


def test_in_process_explain_reads_list_files_too(patched: dict[str, Path], tmp_path: Path, capsys) -> None:
    listed = tmp_path / "list.txt"
    listed.write_text(f"{PHOTOS / 'coffee.jpg'}\nmissing.jpg\n")
    assert main(["explain", "--model", str(patched["xml"]), "--image", str(listed), "--out", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert f"skipped image '{tmp_path / 'missing.jpg'}' not found" in captured.err
    assert "explained 1 image(s), skipped 1" in captured.out


def test_ray_options_are_checked_before_ray_starts(patched: dict[str, Path], capsys, tmp_path: Path) -> None:
    base = ["explain", "--ray", "--model", str(patched["xml"]), "--image", str(PHOTOS), "--out", str(tmp_path)]
    assert "--actors 0 is not a whole number of 1 or more" in cli_fails(capsys, *base, "--actors", "0")
    assert "--batch-size 0 is not" in cli_fails(capsys, *base, "--batch-size", "0")
    assert "--actor-cpus 0.0 is not a CPU count" in cli_fails(capsys, *base, "--actor-cpus", "0")
    assert "records no preprocessing" in cli_fails(capsys, *base[:3], str(patched["bare"]), *base[4:])
    missing = cli_fails(capsys, *base[:5], str(tmp_path / "none.txt"), *base[6:])
    without = [base[0], *base[2:]]
    assert "--address applies to --ray only; add --ray" in cli_fails(capsys, *without, "--address", "127.0.0.2:1")
    assert "--batch-size applies to --ray only" in cli_fails(capsys, *without, "--batch-size", "8")
    assert "list file" in missing and "not found" in missing
    import ray

    assert not ray.is_initialized()


def test_the_runtime_and_in_process_explain_never_import_ray(patched: dict[str, Path], tmp_path: Path) -> None:
    script = (
        "import sys\nfrom ovxai.cli import main\n"
        f"code = main(['explain', '--model', {str(patched['xml'])!r}, '--image', {str(PHOTOS / 'coffee.jpg')!r},"
        f" '--out', {str(tmp_path)!r}])\n"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'pandas')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ray_env(), timeout=120)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr


# -- on Ray ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_ray_matches_in_process_and_stops(patched: dict[str, Path], collection: Any, tmp_path: Path) -> None:
    """The default: a local Ray instance (OpenVINO actors), started and stopped by the command."""
    inputs, images = collection
    token = os.urandom(32).hex()
    out = tmp_path / "out"
    argv = ["--model", str(patched["xml"]), "--image", *map(str, inputs), "--out", str(out)]
    done = explain([*argv, "--node-ip-address", "127.0.0.2"], ray_env(token))
    check_output(done)
    check_results(out, patched["xml"], images)
    deadline = time.monotonic() + 20
    while with_token(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not with_token(token), "Ray processes outlived ovxai explain --ray"


@pytest.mark.slow
@pytest.mark.usefixtures("cluster")
def test_existing_cluster_runs_it_and_stays(patched: dict[str, Path], collection: Any, tmp_path: Path) -> None:
    """``--address`` to a Ray head this test process runs (ONNX Runtime actors): the job runs there and
    leaves the head up, its CPUs free again."""
    import ray

    inputs, images = collection
    out = tmp_path / "out"
    argv = ["--model", str(patched["onnx"]), "--image", *map(str, inputs), "--out", str(out)]
    done = explain([*argv, "--address", ray.get_runtime_context().gcs_address], ray_env())
    check_output(done)
    check_results(out, patched["onnx"], images)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"] == 2  # our actors are gone


def test_an_unreachable_cluster_is_one_line_at_once(patched: dict[str, Path], tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.2", 0))
        port = sock.getsockname()[1]
    argv = ["--model", str(patched["xml"]), "--image", str(PHOTOS), "--out", str(tmp_path / "o")]
    started = time.monotonic()
    done = explain([*argv, "--address", f"127.0.0.2:{port}"], ray_env())
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"ovxai explain: error: cannot reach a Ray cluster at 127.0.0.2:{port} (Connection refused); check --address"
        " (or RAY_ADDRESS) and that the cluster is up: ray status on its head"
    ], done.stderr
    assert time.monotonic() - started < 60  # Ray alone tried for minutes
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_rejected_token_is_one_line(patched: dict[str, Path], tmp_path: Path) -> None:
    """A Ray head with token authentication, and a driver with another token: one line, exit 2."""
    token = os.urandom(32).hex()
    script = (
        "import ray, sys, time\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False, _node_ip_address='127.0.0.2')\n"
        "print(ray.get_runtime_context().gcs_address, flush=True)\ntime.sleep(600)\n"
    )
    head = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ray_env(token))
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        argv = ["--model", str(patched["xml"]), "--image", str(PHOTOS), "--out", str(tmp_path / "o")]
        done = explain([*argv, "--address", address], ray_env(os.urandom(32).hex()))
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.splitlines() == [
            f"ovxai explain: error: the Ray cluster at {address} rejected this driver's token; set RAY_AUTH_TOKEN "
            "(or ~/.ray/auth_token) to the cluster's token, with RAY_AUTH_MODE=token"
        ]
    finally:
        head.terminate()  # Ray's handler in the head stops its processes
        head.wait(60)
    deadline = time.monotonic() + 30
    while with_token(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not with_token(token)


def lines_and_files(out: Path) -> list[dict[str, Any]]:
    """results.jsonl's lines, after checking that each is complete and in order, names files that exist, and that
    the folder holds nothing else of ours (no file of another run, no scratch file)."""
    text = (out / "results.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["index"] for line in lines] == list(range(len(lines)))
    named = {name for line in lines for name in [line.get("map"), *line.get("overlays", [])] if name}
    assert all((out / name).is_file() for name in named)
    assert {p.name for p in out.iterdir()} == named | {"results.jsonl", "run.json"}
    return lines


@pytest.mark.slow
def test_sigterm_keeps_complete_lines_and_a_rerun_resumes_or_starts_clean(patched: dict[str, Path], tmp_path: Path):
    """SIGTERM to the driver mid-run: exit 143, one line, no C++ stack dump, the complete lines and their files
    (Ray's own handler killed the instance under the driver: a stack dump and an empty results.jsonl). The
    same command again resumes from there; another --explain starts clean."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sorted(PHOTOS.glob("*.jpg"))
    for i in range(60):
        os.link(photos[i % len(photos)], folder / f"p{i:03}.jpg")
    (folder / "p030_loop.jpg").symlink_to("p030_loop.jpg")
    out, token = tmp_path / "out", os.urandom(32).hex()
    argv = ["--model", str(patched["xml"]), "--image", str(folder), "--out", str(out), "--node-ip-address", "127.0.0.2"]
    command = [sys.executable, "-m", "ovxai.cli", "explain", "--ray", "--actors", "1", "--batch-size", "1", *argv]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env(token))
    results = out / "results.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (results.is_file() and results.read_text().count("\n") >= 3):
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "ovxai explain: terminated; stopped"
    assert not any(word in err for word in ("Stack trace", "*** ", "SIGTERM", "Traceback")), err[-3000:]
    kept = len(lines_and_files(out))
    assert 3 <= kept < 61
    again = explain(argv, ray_env(token))
    assert again.returncode == 1, again.stderr[-3000:]  # the loop is skipped
    assert f"resuming: {kept} of 61 images already in {results}" in again.stdout
    lines = lines_and_files(out)
    assert len(lines) == 61 and "is a loop of symbolic links" in lines[31]["error"]
    assert [Path(line["image"]).name for line in lines[:3]] == ["p000.jpg", "p001.jpg", "p002.jpg"]
    other = explain([*argv, "--explain", "top2"], ray_env(token))
    assert other.returncode == 1 and "starting clean" in other.stdout
    assert all(len(line.get("overlays", [1, 2])) == 2 for line in lines_and_files(out))
    deadline = time.monotonic() + 30
    while with_token(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not with_token(token), "Ray processes outlived ovxai explain --ray"
