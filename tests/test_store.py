"""The store: schema versions, migrations, locking, and the info summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from labelql.store import SCHEMA_VERSION, Store, StoreError


def test_create_records_schema_version(tmp_path: Path) -> None:
    with Store.create(tmp_path / "a.duckdb") as s:
        assert s.version() == SCHEMA_VERSION
        tables = {r[0] for r in s.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"rows", "spaces", "gold", "ingest_errors", "schema_version"} <= tables


def test_open_missing_without_create_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no LabelQL database") as e:
        Store.open(tmp_path / "none.duckdb")
    assert "labelql init" in (e.value.hint or "")


def test_migrations_run_forward_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import labelql.store as st

    db = tmp_path / "m.duckdb"
    Store.create(db).close()
    extra = [["CREATE TABLE later_feature (x INTEGER)"]]
    monkeypatch.setattr(st, "MIGRATIONS", st.MIGRATIONS + extra)
    monkeypatch.setattr(st, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store.open(db) as s:
        assert s.version() == SCHEMA_VERSION + 1
        assert s.con.execute("SELECT count(*) FROM later_feature").fetchall() == [(0,)]
    with Store.open(db) as s:  # already applied: nothing runs twice
        assert s.con.execute("SELECT count(*) FROM schema_version").fetchall() == [(SCHEMA_VERSION + 1,)]


def test_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    Store.create(db).close()
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 5])
    con.close()
    with pytest.raises(StoreError, match="newer than this LabelQL understands"):
        Store.open(db)


def test_second_process_gets_a_plain_message(tmp_path: Path) -> None:
    db = tmp_path / "busy.duckdb"
    holder = Store.create(db)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "labelql.cli", "info", "--db", str(db)], capture_output=True, text=True
        )
    finally:
        holder.close()
    assert out.returncode == 1
    assert "is in use by another process (PID" in out.stderr
    assert "Traceback" not in out.stderr and "IOException" not in out.stderr


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_text("this is not a database file at all" * 100)
    with pytest.raises(StoreError):
        Store.open(bad)


def test_space_names_are_validated(store: Store) -> None:
    from labelql.diagnostics import LabelQLError

    with pytest.raises(LabelQLError, match="invalid space name"):
        store.create_space("bad name; drop", provider="p", model_id="m", dim=4, fingerprint="f")
    info = store.create_space("clip", provider="p", model_id="m", dim=4, fingerprint="f")
    assert info.table == f"vectors_{info.id}"
