"""``ovxai explain --ray``: a collection explained by a pool of Ray actors, against the in-process
``Explainer.explain_many`` on the same images (same top-k, equal maps and overlays); bad images (garbage, a
truncated PNG, a missing path in a list file) reported and skipped; a local Ray instance started and stopped
by the command; an existing Ray head (``--address``) left running. Ray stays on loopback (127.0.0.2, as in
tests/e2e/test_serve.py, whose Ray head fixture and process helpers are reused here)."""

from __future__ import annotations

import io
import json
import os
import shutil
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
from ovxai.runtime import Explainer
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
        assert np.array_equal(np.asarray(Image.open(out / overlay)), np.asarray(result.overlay(0)))
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
