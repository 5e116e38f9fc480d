"""Problems found in user files, reported as ``path:line: field: message``.

Every loader collects all the problems in a file before it gives up, so a
sysadmin fixes a file in one pass instead of one error per reload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in one file; ``line`` is 1-based, 0 when unknown."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ProblemsError(Exception):
    """Raised with every problem found; ``str()`` lists them one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))
