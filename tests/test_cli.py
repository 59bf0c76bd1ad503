"""The command line: lazy imports, exit codes, JSON, fmt --check, explain, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from labelql.cli import main

FIX = Path(__file__).parent / "fixtures" / "lang"
REPO = Path(__file__).resolve().parents[1]


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_help_and_check_do_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from labelql.cli import main\n"
        f"r = CliRunner().invoke(main, ['check', {str(FIX / 'cats_dogs.lql')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('duckdb', 'numpy', 'pyarrow', 'PIL', 'torch', 'open_clip', 'umap', 'rich') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("labelql, version ")


def test_check_ok_and_errors() -> None:
    code, out, err = run("check", str(FIX / "cats_dogs.lql"))
    assert code == 0 and "ok (5 rules, 3 lets)" in out and err == ""
    code, out, err = run("check", str(FIX / "check_errors.lql"))
    assert code == 1 and "check_errors.lql:10:1: error: unknown label 'dgo'" in err
    assert "Traceback" not in err


def test_check_json_for_editors() -> None:
    code, out, _ = run("check", "--json", str(FIX / "syntax_errors.lql"), str(FIX / "warnings.lql"))
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    bad, warned = data["files"]
    assert bad["ok"] is False and bad["diagnostics"][0] == {
        "severity": "error",
        "code": "syntax",
        "message": "unknown statement 'lables'",
        "hint": "did you mean 'labels'?",
        "file": str(FIX / "syntax_errors.lql"),
        "line": 1,
        "col": 1,
        "end_line": 1,
        "end_col": 7,
    }
    assert warned["ok"] is True and {d["code"] for d in warned["diagnostics"]} >= {"never-matches", "unused"}


def test_check_missing_file() -> None:
    code, _, err = run("check", "nope.lql")
    assert code == 1 and err.strip() == "error: no such policy file: nope.lql"


def test_fmt_check_and_write(tmp_path: Path) -> None:
    p = tmp_path / "p.lql"
    p.write_text((FIX / "messy.lql").read_text())
    code, _, err = run("fmt", "--check", str(p))
    assert code == 1 and "would reformat" in err
    assert p.read_text() == (FIX / "messy.lql").read_text()
    code, out, _ = run("fmt", str(p))
    assert code == 0 and p.read_text() == (FIX / "messy.fmt.lql").read_text()
    assert run("fmt", "--check", str(p))[0] == 0
    code, out, _ = run("fmt", "-", input="labels   a,b\n")
    assert out == "labels a, b\n"


def test_fmt_refuses_broken_input(tmp_path: Path) -> None:
    p = tmp_path / "p.lql"
    p.write_text("labels a\ndog IF -> done\n")
    code, _, err = run("fmt", str(p))
    assert code == 1 and "p.lql:2:8: error" in err and p.read_text() == "labels a\ndog IF -> done\n"


@pytest.mark.parametrize("stage", ["tokens", "ast", "policy"])
def test_explain_stages(stage: str) -> None:
    code, out, _ = run("explain", str(FIX / "cats_dogs.lql"), "--stage", stage, "--json")
    assert code == 0
    data = json.loads(out)
    if stage == "tokens":
        assert data[0] == {"at": "1:1", "type": "COMMENT", "value": "# rules/cats_dogs.lql"}
        assert {"at": "2:1", "type": "LABELS", "value": "labels"} in data
    elif stage == "ast":
        assert data[0]["node"] == "Labels" and len(data) == 17
    else:
        assert data["labels"] == ["cat", "dog"] and len(data["rules"]) == 5


def test_rules_examples_check_clean_and_are_formatted() -> None:
    files = sorted((REPO / "rules").glob("*.lql"))
    assert files
    for f in files:
        code, _out, err = run("check", str(f))
        assert code == 0 and err == "", (f, err)
        assert run("fmt", "--check", str(f))[0] == 0, f


def test_store_commands_without_database(tmp_path: Path) -> None:
    code, _, err = run("info", "--db", str(tmp_path / "none.duckdb"))
    assert code == 1 and "no LabelQL database" in err and "labelql init" in err
    code, out, _ = run("init", "--db", str(tmp_path / "new.duckdb"))
    from labelql.store import SCHEMA_VERSION

    assert code == 0 and f"created (schema version {SCHEMA_VERSION})" in out
    code, out, _ = run("info", "--db", str(tmp_path / "new.duckdb"), "--json")
    assert code == 0 and json.loads(out)["rows"] == 0


def test_demo_runs_and_says_its_data_is_simulated(tmp_path: Path) -> None:
    pytest.importorskip("umap")
    code, out, err = run("demo", "--db", str(tmp_path / "d.duckdb"), "--rows", "1500")
    assert code == 0, err
    assert "SIMULATED DATA" in out and "1,500 simulated rows" in out
    assert "Direct classification (done)" in out and "cumulative coverage" in out
