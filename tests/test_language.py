"""The language front end against golden files: AST, checked policy, diagnostics and fmt.

Set LABELQL_UPDATE_GOLDEN=1 to rewrite the expected files after an intended change, then read the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labelql.checker import check_file
from labelql.diagnostics import DiagnosticError
from labelql.formatter import format_source
from labelql.parser import parse, parse_module, read_source

FIX = Path(__file__).parent / "fixtures" / "lang"
UPDATE = os.environ.get("LABELQL_UPDATE_GOLDEN") == "1"


def golden(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"golden file {path.name} is missing; run with LABELQL_UPDATE_GOLDEN=1 to create it")
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), (
        f"{path.name} differs (LABELQL_UPDATE_GOLDEN=1 rewrites)"
    )


def rel(p: Path) -> str:
    return os.path.relpath(p, Path.cwd())


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    # Diagnostics name files as given; run from the fixture folder so goldens hold short names.
    monkeypatch.chdir(FIX)


def diagnostics_text(path: str) -> str:
    try:
        policy = check_file(path)
    except DiagnosticError as e:
        return e.render() + "\n"
    return "".join(w.render(policy.sources) + "\n" for w in policy.warnings) or "clean\n"


def test_example_policy_ast_golden() -> None:
    module = parse(read_source("cats_dogs.lql"), "cats_dogs.lql")
    golden(FIX / "cats_dogs.ast.json", json.dumps([s.to_json() for s in module.statements], indent=1) + "\n")


def test_example_policy_checks_clean_golden() -> None:
    policy = check_file("cats_dogs.lql")
    assert policy.warnings == ()
    data = policy.to_json()
    data.pop("source_hash")
    golden(FIX / "cats_dogs.policy.json", json.dumps(data, indent=1) + "\n")
    assert [r.name for r in policy.rules] == [f"cats_dogs.lql:{n}" for n in (21, 22, 23, 24, 25)]
    assert [x.name for x in policy.lets] == ["nl_cat_high", "nl_cat_low", "fs_dog"]
    assert policy.default_space == "clip"


@pytest.mark.parametrize("name", ["syntax_errors", "check_errors", "warnings"])
def test_diagnostics_golden(name: str) -> None:
    golden(FIX / f"{name}.expected", diagnostics_text(f"{name}.lql"))


def test_syntax_errors_are_all_reported_in_one_run() -> None:
    _, diags = parse_module(read_source("syntax_errors.lql"), "syntax_errors.lql")
    assert [d.span.line for d in diags if d.span] == list(range(1, 11))


def test_imports() -> None:
    policy = check_file("imports/main.lql")
    assert policy.imports == ("imports/shared.lql",)
    assert policy.labels == ("cat", "dog") and policy.default_space == "clip"
    assert policy.space("clip").param("checkpoint") == "weights/clip.pt"
    assert [r.name for r in policy.rules] == ["main.lql:3", "main.lql:4"]
    assert policy.warnings == ()  # unused definitions in an imported library are not the user's problem


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("imports/cycle_a.lql", "import cycle: cycle_a.lql -> cycle_b.lql -> cycle_a.lql"),
        ("imports/imports_rules.lql", "rules cannot be imported"),
        ("imports/imports_missing.lql", "cannot import 'missing.lql': no such policy file"),
    ],
)
def test_import_errors(name: str, expected: str) -> None:
    with pytest.raises(DiagnosticError) as e:
        check_file(name)
    assert any(expected in d.message for d in e.value.diagnostics), e.value.render()


def test_fmt_golden_and_round_trip() -> None:
    src = read_source("messy.lql")
    out = format_source(src, "messy.lql")
    golden(FIX / "messy.fmt.lql", out)
    assert format_source(out, "x") == out
    assert parse(out) == parse(src)


def test_fmt_identity_on_canonical_files() -> None:
    for name in ("canonical.lql", "messy.fmt.lql", "imports/shared.lql", "imports/main.lql"):
        src = read_source(name)
        assert format_source(src, name) == src, name


def test_order_independence() -> None:
    text = read_source("cats_dogs.lql")
    lines = text.splitlines()
    reordered = "\n".join(reversed(lines)) + "\n"  # every statement is one line: reverse them all
    a, b = check_file("a.lql", text), check_file("a.lql", reordered)
    assert {x.name for x in a.lets} == {x.name for x in b.lets}
    assert sorted(r.condition.to_json().__repr__() for r in a.rules) == sorted(
        r.condition.to_json().__repr__() for r in b.rules
    )


def test_keywords_are_case_insensitive() -> None:
    lower = check_file(
        "a.lql",
        'labels cat\nembedding e = precomputed("e")\n'
        'cat if text("x") > 0.5 and not text("y") between 0.1 and 0.2 -> done\n',
    )
    upper = check_file(
        "a.lql",
        'LABELS cat\nEMBEDDING e = precomputed("e")\n'
        'cat IF text("x") > 0.5 AND NOT text("y") BETWEEN 0.1 AND 0.2 -> DONE\n',
    )
    assert lower.rules[0].condition == upper.rules[0].condition
