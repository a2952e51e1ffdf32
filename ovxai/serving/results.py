"""The folder that ``ovxai explain --ray`` writes, consistent on every way out.

``results.jsonl`` has one line per image in input order; an explained image's files (maps, overlays) are
written, each whole, before its line, and a line is written whole (Ctrl-C and SIGTERM wait for it) and
flushed at once, so every line names files that exist, whatever ends the run. ``run.json`` records what
produced them: the model (its path, size and modification time, or its URL), every setting that changes a
result, and a digest of the image list. A rerun into the same folder resumes when all of that is the same
(the complete lines are kept, the rest explained and appended), and otherwise starts clean: the files the
old lines name, the old ``results.jsonl`` and ``run.json`` are removed — nothing else in the folder is
touched. Either is said in one line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ovxai.errors import OvxaiError
from ovxai.interrupts import deferred
from ovxai.runtime.pictures import write_atomically

RESULTS = "results.jsonl"
RUN = "run.json"
_SCRATCH = re.compile(r"\..+\.\d+\.tmp")  # write_atomically's scratch files, left by a killed run


def identity(model: dict[str, Any], settings: dict[str, Any], images: list[tuple[str, str]]) -> dict[str, Any]:
    """What a run's results depend on, as JSON: the model, the settings, and the images (path as given,
    output name) in order (as a digest: the list can be long)."""
    digest = hashlib.sha256()
    for path, name in images:
        digest.update(f"{path}\0{name}\n".encode(errors="surrogateescape"))
    run = {"model": model, "settings": settings, "images": len(images), "images_sha256": digest.hexdigest()}
    loaded: dict[str, Any] = json.loads(json.dumps(run))  # tuples as lists: equal to what run.json reads back
    return loaded


@dataclass
class Kept:
    """The lines a rerun keeps: how many (a prefix of the input order), and of them explained and skipped."""

    lines: int = 0
    explained: int = 0
    skipped: int = 0
    note: str = ""  # what happened to the folder, one line ('' for a new one)


def prepare(out: Path, run: dict[str, Any]) -> Kept:
    """Make ``out`` ready for the run ``run`` (see the module's docstring): resume, or start clean."""
    results, record = out / RESULTS, out / RUN
    try:
        for scratch in (p for p in out.iterdir() if _SCRATCH.fullmatch(p.name)) if out.is_dir() else ():
            scratch.unlink(missing_ok=True)
        if not results.exists():
            record.unlink(missing_ok=True)
            return Kept()
        lines, end = _complete_lines(results)
        try:
            before = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if before == run:
            with results.open("r+b") as file:
                file.truncate(end)  # a line cut short by a kill
            errors = sum("error" in line for line in lines)
            said = "all" if len(lines) == run["images"] else f"{len(lines)} of"
            note = f"resuming: {said} {run['images']} images already in {results}"
            return Kept(len(lines), len(lines) - errors, errors, note)
        removed = 0
        for line in lines:
            for name in [line.get("map"), *(line.get("overlays") or [])]:
                if isinstance(name, str) and name and Path(name).name == name and not name.startswith("."):
                    path = out / name
                    if path.is_file():
                        path.unlink()
                        removed += 1
        results.unlink()
        record.unlink(missing_ok=True)
    except OSError as exc:
        raise OvxaiError(f"cannot prepare '{out}' ({exc.strerror or exc})", "check --out and its permissions") from None
    why = "another run's (other model, settings or images)" if before is not None else "results of unknown origin"
    return Kept(note=f"starting clean: {results} held {why}; removed it, {RUN} and the {removed} files it named")


def _complete_lines(results: Path) -> tuple[list[dict[str, Any]], int]:
    """The lines of ``results`` up to the first that is cut short, unreadable or out of order, and the byte
    offset where they end."""
    lines: list[dict[str, Any]] = []
    end = 0
    with results.open("rb") as file:
        for raw in file:
            if not raw.endswith(b"\n"):
                break
            try:
                line = json.loads(raw)
            except ValueError:
                break
            if not isinstance(line, dict) or line.get("index") != len(lines):
                break
            lines.append(line)
            end += len(raw)
    return lines, end


class Writer:
    """Appends results to ``out``: each image's files, then its line, as one block that Ctrl-C and SIGTERM
    wait for; the line flushed at once (a killed driver loses at most the image it was writing)."""

    def __init__(self, out: Path, run: dict[str, Any], kept: Kept) -> None:
        self.out = out
        try:
            out.mkdir(parents=True, exist_ok=True)
            if not kept.lines:
                write_atomically(out / RUN, (json.dumps(run, indent=2) + "\n").encode())
            self._file: IO[str] = (out / RESULTS).open("a", encoding="utf-8")
        except OSError as exc:
            raise OvxaiError(f"cannot write into '{out}' ({exc.strerror or exc})", "check the disk and --out") from None

    def add(self, entry: dict[str, Any], files: dict[str, bytes]) -> None:
        """Write ``files`` (name in ``out`` -> bytes), then ``entry`` as a line."""
        with deferred():
            try:
                for name, data in files.items():
                    write_atomically(self.out / name, data)
                self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self._file.flush()
            except OSError as exc:
                raise OvxaiError(
                    f"cannot write into '{self.out}' ({exc.strerror or exc})", "check the disk and --out"
                ) from None

    def close(self) -> None:
        self._file.close()
