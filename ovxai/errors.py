"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


def engine_reason(exc: BaseException) -> str:
    """The sentence of an engine's exception that says what failed, without OpenVINO's C++ file/line noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[0][:200]


class OvxaiError(Exception):
    """An input problem the user can fix; the CLI prints it as one line and exits non-zero."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))
