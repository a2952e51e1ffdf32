"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class OvxaiError(Exception):
    """An input problem the user can fix; the CLI prints it as one line and exits non-zero."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))
