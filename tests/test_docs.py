"""The docs stay true: examples in docs/language.md check as they say, docs/cli.md matches --help."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from labelql.checker import check_text
from labelql.diagnostics import DiagnosticError

REPO = Path(__file__).resolve().parents[1]
LANGUAGE = (REPO / "docs" / "language.md").read_text()
BLOCKS = re.findall(r"```(lql|lql-error)\n(.*?)```", LANGUAGE, flags=re.S)


def test_language_doc_has_examples() -> None:
    kinds = [k for k, _ in BLOCKS]
    assert kinds.count("lql") >= 3 and kinds.count("lql-error") >= 3


@pytest.mark.parametrize(("kind", "src"), BLOCKS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BLOCKS)])
def test_language_doc_examples(kind: str, src: str) -> None:
    if kind == "lql":
        check_text(src, "doc.lql")
        return
    expected = src.splitlines()[0].removeprefix("# error: ")
    with pytest.raises(DiagnosticError) as info:
        check_text(src, "doc.lql")
    assert expected in [d.message for d in info.value.diagnostics]


def test_every_diagnostic_code_is_documented() -> None:
    codes = set()
    for f in ("parser.py", "checker.py"):
        codes |= set(re.findall(r'code="([a-z-]+)"', (REPO / "src" / "labelql" / f).read_text()))
    assert codes, "no codes found"
    missing = sorted(c for c in codes if f"`{c}`" not in LANGUAGE)
    assert not missing, f"codes missing from docs/language.md: {missing}"


def test_cli_reference_matches_help() -> None:
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import gen_cli
    finally:
        sys.path.pop(0)
    assert (REPO / "docs" / "cli.md").read_text() == gen_cli.render(), "run: python docs/gen_cli.py"


def test_readme_gives_the_two_commands_and_ci_runs_the_same() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci
