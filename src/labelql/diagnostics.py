"""Positions, diagnostics and the one error type users ever see.

Every problem LabelQL reports about user input is a :class:`Diagnostic` with a :class:`Span`
(file, line, column) and renders as ``file:line:col: error: message`` followed by the source line,
a caret under the span and, where one helps, a hint.  Python tracebacks never reach a user for bad
input: the CLI catches :class:`LabelQLError` and prints its rendering.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Severity = Literal["error", "warning"]


class Span(NamedTuple):
    """A half-open region of one source file; lines and columns are 1-based.

    A named tuple rather than a dataclass: the parser makes one per syntax node, and a tuple is
    three times cheaper to build than a frozen dataclass.
    """

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    start: int = 0
    end: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "end_line": self.end_line,
            "end_col": self.end_col,
        }

    def cover(self, other: Span) -> Span:
        """The smallest span holding both ``self`` and ``other`` (same file)."""
        first = self if self.start <= other.start else other
        last = self if self.end >= other.end else other
        return Span(self.file, first.line, first.col, last.end_line, last.end_col, first.start, last.end)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning about user input."""

    severity: Severity
    message: str
    span: Span | None = None
    hint: str | None = None
    code: str = "error"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            **(self.span.to_json() if self.span else {}),
        }

    def render(self, sources: SourceMap | None = None) -> str:
        """Render as ``file:line:col: severity: message`` + source line + caret + hint."""
        where = f"{self.span}: " if self.span else ""
        out = [f"{where}{self.severity}: {self.message}"]
        line_text = sources.line(self.span.file, self.span.line) if (sources and self.span) else None
        if self.span is not None and line_text is not None:
            gutter = str(self.span.line)
            out.append(f" {gutter} | {line_text}")
            width = (
                self.span.end_col - self.span.col
                if self.span.end_line == self.span.line
                else len(line_text) - self.span.col + 1
            )
            caret = " " * (self.span.col - 1) + "^" * max(1, width)
            out.append(f" {' ' * len(gutter)} | {caret}")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


@dataclass
class SourceMap:
    """The text of every file a diagnostic may point into."""

    texts: dict[str, str] = field(default_factory=dict)
    _lines: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, text: str) -> None:
        self.texts[name] = text
        self._lines.pop(name, None)

    def line(self, name: str, line: int) -> str | None:
        if name not in self.texts:
            return None
        if name not in self._lines:
            self._lines[name] = [
                ln.rstrip("\r") for ln in self.texts[name].split("\n")
            ]  # lines as the lexer counts them
        lines = self._lines[name]
        return lines[line - 1] if 0 < line <= len(lines) else ""


class LabelQLError(Exception):
    """The base of every error LabelQL reports to a user (never a traceback)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return f"error: {self.message}" + (f"\n  hint: {self.hint}" if self.hint else "")

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "hint": self.hint}


class DiagnosticError(LabelQLError):
    """One or more diagnostics with positions (parse and check errors)."""

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: SourceMap | None = None) -> None:
        errors = [d for d in diagnostics if d.severity == "error"]
        first = errors[0] if errors else diagnostics[0]
        super().__init__(first.message, first.hint)
        self.diagnostics = list(diagnostics)
        self.sources = sources

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)

    def to_json(self) -> dict[str, Any]:
        return {"diagnostics": [d.to_json() for d in self.diagnostics]}


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean '{lowered[matches[0]]}'?" if matches else None
