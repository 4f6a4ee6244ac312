"""A problem found in a persona file (file, field, line, what would be right), and what loading one gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from npcserver.personas.persona import Persona


@dataclass(frozen=True, slots=True)
class PersonaProblem:
    """One mistake in one file: where it is, what is wrong, what would be right."""

    file: Path
    field: str | None  # dotted, list entries counted from 1: "example_lines[2].npc"
    line: int | None
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        what = f"{self.field}: {self.problem}" if self.field else self.problem
        return f"{where}: {what}" + (f" {self.fix}" if self.fix else "")


@dataclass(frozen=True, slots=True)
class LoadResult:
    file: Path
    persona: Persona | None
    problems: tuple[PersonaProblem, ...]
    version: str | None = None  # content hash, also when the content is broken

    @property
    def ok(self) -> bool:
        return self.persona is not None and not self.problems


class PersonaFileError(ValueError):
    def __init__(self, problems: Sequence[PersonaProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
