"""The wheel carries the grammar, and an installed copy parses with it (not with the repository's)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_grammar(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("labelql-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "labelql/grammar/labelql.lark" in names
        assert z.read("labelql/grammar/labelql.lark") == (REPO / "grammar" / "labelql.lark").read_bytes()
        z.extractall(tmp_path / "site")
    code = (
        "import labelql.parser as p, pathlib\n"
        "assert 'site' in pathlib.Path(p.__file__).parts, p.__file__\n"
        "p.parse('labels cat\\n')\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "ok"
