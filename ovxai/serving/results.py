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
from dataclasses import dataclass, field
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
    """What a rerun does with the folder, found by :func:`look` without changing it and done by
    :meth:`apply`: keep ``lines`` complete lines (a prefix of the input order; ``explained`` and ``skipped``
    of them) and cut what follows them at byte ``end``, or (``stale``) remove an earlier run's files."""

    out: Path
    lines: int = 0
    explained: int = 0
    skipped: int = 0
    end: int = 0
    stale: list[Path] = field(default_factory=list)  # start clean: these files go
    note: str = ""  # what happens to the folder, in one line ('' for a new one)

    def apply(self) -> None:
        try:
            for scratch in (p for p in self.out.iterdir() if _SCRATCH.fullmatch(p.name)) if self.out.is_dir() else ():
                scratch.unlink(missing_ok=True)
            if self.lines:
                with (self.out / RESULTS).open("r+b") as file:
                    file.truncate(self.end)  # a line cut short by a kill
            for path in self.stale:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise OvxaiError(f"cannot prepare '{self.out}' ({exc.strerror or exc})", "check --out") from None


def look(out: Path, run: dict[str, Any]) -> Kept:
    """What a run ``run`` does with ``out`` (see the module's docstring): resume or start clean; nothing is
    changed here."""
    results, record = out / RESULTS, out / RUN
    try:
        if not results.exists():
            return Kept(out, stale=[record] if record.exists() else [])
        lines, end = _complete_lines(results)
    except OSError as exc:
        raise OvxaiError(f"cannot read '{results}' ({exc.strerror or exc})", "check --out") from None
    try:
        before = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    if before == run:
        errors = sum("error" in line for line in lines)
        said = "all" if len(lines) == run["images"] else f"{len(lines)} of"
        note = f"resuming: {said} {run['images']} images already in {results}"
        return Kept(out, len(lines), len(lines) - errors, errors, end, note=note)
    named = (name for line in lines for name in [line.get("map"), *(line.get("overlays") or [])])
    ours = [n for n in named if isinstance(n, str) and n and Path(n).name == n and not n.startswith(".")]
    stale = [out / name for name in ours if (out / name).is_file()]  # a plain name in out: nothing else
    why = "another run's (other model, settings or images)" if before is not None else "results of unknown origin"
    note = f"starting clean: {results} held {why}; removing it, {RUN} and the {len(stale)} files it names"
    return Kept(out, stale=[*stale, results, record], note=note)


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
