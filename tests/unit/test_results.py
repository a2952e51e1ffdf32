"""The folder ``ovxai explain --ray`` writes (``ovxai.serving.results``): a rerun resumes the same run from its
complete lines or starts clean, removing only what the old lines named; a line is written whole, after its
files, even when Ctrl-C or SIGTERM arrives while it is written (``ovxai.interrupts``)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ovxai.interrupts import Terminated, deferred, sigterm_raises
from ovxai.serving import results


def run_of(images: int = 3, top: str = "top1") -> dict[str, object]:
    return results.identity(
        {"file": "m.xml", "size": 1}, {"targets": top}, [(f"{i}.jpg", str(i)) for i in range(images)]
    )


def write(out: Path, run: dict[str, object], count: int, start: int = 0) -> None:
    kept = results.look(out, run)
    kept.apply()
    writer = results.Writer(out, run, kept)
    for i in range(start, start + count):
        writer.add({"index": i, "map": f"{i}.npy", "overlays": [f"{i}_7.jpg"]}, {f"{i}.npy": b"m", f"{i}_7.jpg": b"o"})
    writer.close()


def test_a_new_folder_then_a_resume_from_the_complete_lines(tmp_path: Path) -> None:
    out, run = tmp_path / "out", run_of()
    assert results.look(out, run).note == "" and not out.exists()  # looking changes nothing
    write(out, run, 2)
    with (out / results.RESULTS).open("a") as file:
        file.write('{"index": 2, "map": "2.n')  # a line cut short by a kill
    (out / ".2_7.jpg.123.tmp").write_bytes(b"half")  # a scratch file of a killed write
    kept = results.look(out, run)
    assert (kept.lines, kept.explained, kept.skipped) == (2, 2, 0)
    assert kept.note == f"resuming: 2 of 3 images already in {out / results.RESULTS}"
    kept.apply()
    assert (out / results.RESULTS).read_text().count("\n") == 2 and not (out / ".2_7.jpg.123.tmp").exists()
    write(out, run, 1, start=2)
    lines = [json.loads(line) for line in (out / results.RESULTS).read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert results.look(out, run).note == f"resuming: all 3 images already in {out / results.RESULTS}"


def test_another_run_starts_clean_and_touches_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, run_of(), 3)
    (out / "mine.txt").write_text("the user's")
    (out / "0.npy.bak").write_text("not named by a line")
    lines = (out / results.RESULTS).read_text().splitlines()
    (out / results.RESULTS).write_text("\n".join([*lines[:2], '{"index": 2, "map": "../../etc/passwd"}']) + "\n")
    kept = results.look(out, run_of(top="top2"))
    assert "starting clean" in kept.note and "another run's" in kept.note and "4 files" in kept.note
    assert len(list(out.iterdir())) == 10  # nothing removed yet
    kept.apply()
    assert sorted(p.name for p in out.iterdir()) == ["0.npy.bak", "2.npy", "2_7.jpg", "mine.txt"]


def test_results_of_unknown_origin_start_clean(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, run_of(), 1)
    (out / results.RUN).unlink()
    assert "results of unknown origin" in results.look(out, run_of()).note


def test_a_signal_waits_for_the_line_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM that arrives between an image's files takes effect once its line is written too."""
    out, run = tmp_path / "out", run_of()
    writer = results.Writer(out, run, results.look(out, run))
    real = results.write_atomically

    def then_sigterm(path: Path, data: bytes) -> None:
        real(path, data)
        if path.suffix == ".npy":
            os.kill(os.getpid(), signal.SIGTERM)  # arrives between the map and the overlay

    monkeypatch.setattr(results, "write_atomically", then_sigterm)
    with sigterm_raises(), pytest.raises(Terminated):
        writer.add({"index": 0, "map": "0.npy", "overlays": ["0_7.jpg"]}, {"0.npy": b"m", "0_7.jpg": b"o"})
    writer.close()
    assert (out / "0_7.jpg").read_bytes() == b"o" and (out / results.RESULTS).read_text().endswith("}\n")


def test_deferred_passes_signals_on_once_the_block_ends() -> None:
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done = True
    assert done
