"""The embedded store: one DuckDB file with a versioned schema.

The store is the source of truth for a dataset: its rows, embedding spaces and vectors, gold
labels and the errors met while getting data in.  The schema is documented in ``docs/store.md``;
every change to it is a new entry in :data:`MIGRATIONS`, applied forward in one transaction.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import duckdb

from labelql.diagnostics import LabelQLError

DEFAULT_DB = "labelql.duckdb"

# Each migration takes the schema from version N-1 to N.  Never edit a released entry: append.
MIGRATIONS: list[list[str]] = [
    # 1: rows, spaces, gold, ingest errors
    [
        """CREATE TABLE rows (
            key       VARCHAR PRIMARY KEY,
            kind      VARCHAR NOT NULL,
            uri       VARCHAR,
            text      VARCHAR,
            added_at  TIMESTAMP NOT NULL,
            source    VARCHAR NOT NULL,
            width     INTEGER,
            height    INTEGER,
            format    VARCHAR,
            bytes     BIGINT,
            sha256    VARCHAR,
            metadata  JSON
        )""",
        """CREATE TABLE spaces (
            name           VARCHAR PRIMARY KEY,
            id             INTEGER NOT NULL UNIQUE,
            provider       VARCHAR NOT NULL,
            model_id       VARCHAR NOT NULL,
            dim            INTEGER NOT NULL,
            fingerprint    VARCHAR NOT NULL,
            random_weights BOOLEAN NOT NULL DEFAULT false,
            params         JSON,
            created_at     TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE gold (
            key        VARCHAR NOT NULL,
            label      VARCHAR NOT NULL,
            source     VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (key, source)
        )""",
        "CREATE SEQUENCE ingest_error_id",
        """CREATE TABLE ingest_errors (
            id         BIGINT PRIMARY KEY DEFAULT nextval('ingest_error_id'),
            key        VARCHAR,
            path       VARCHAR,
            stage      VARCHAR NOT NULL,
            message    VARCHAR NOT NULL,
            source     VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
    ],
]

MIGRATIONS.append(
    # 2: signals: cached prompt vectors, scores, 2-D maps and clusters
    [
        """CREATE TABLE prompt_vectors (
            space       VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,
            prompt      VARCHAR NOT NULL,
            vec         FLOAT[] NOT NULL,
            PRIMARY KEY (space, fingerprint, prompt)
        )""",
        """CREATE TABLE signals (
            id           VARCHAR PRIMARY KEY,
            kind         VARCHAR NOT NULL,
            space        VARCHAR NOT NULL,
            args         JSON NOT NULL,
            data_version VARCHAR NOT NULL,
            computed_at  TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE scores (
            signal VARCHAR NOT NULL,
            key    VARCHAR NOT NULL,
            value  FLOAT NOT NULL,
            PRIMARY KEY (signal, key)
        )""",
        "CREATE SEQUENCE map_id",
        """CREATE TABLE maps (
            id          INTEGER PRIMARY KEY DEFAULT nextval('map_id'),
            space       VARCHAR NOT NULL,
            kind        VARCHAR NOT NULL,
            params      JSON NOT NULL,
            fingerprint VARCHAR NOT NULL,
            model_path  VARCHAR,
            fitted_rows BIGINT NOT NULL,
            created_at  TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE map_coords (
            map_id    INTEGER NOT NULL,
            key       VARCHAR NOT NULL,
            x         FLOAT NOT NULL,
            y         FLOAT NOT NULL,
            placed_by VARCHAR NOT NULL,
            PRIMARY KEY (map_id, key)
        )""",
        "CREATE SEQUENCE cluster_run_id",
        """CREATE TABLE cluster_runs (
            id         INTEGER PRIMARY KEY DEFAULT nextval('cluster_run_id'),
            map_id     INTEGER NOT NULL,
            spec       JSON NOT NULL,
            model_path VARCHAR,
            summary    JSON NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE cluster_assign (
            run_id  INTEGER NOT NULL,
            key     VARCHAR NOT NULL,
            cluster INTEGER NOT NULL,
            name    VARCHAR,
            PRIMARY KEY (run_id, key)
        )""",
    ]
)

MIGRATIONS.append(
    # 3: runs of a policy and their per-row assignments
    [
        "CREATE SEQUENCE run_id",
        """CREATE TABLE runs (
            id           INTEGER PRIMARY KEY DEFAULT nextval('run_id'),
            policy_path  VARCHAR NOT NULL,
            policy_text  VARCHAR NOT NULL,
            policy_hash  VARCHAR NOT NULL,
            fingerprints JSON NOT NULL,
            summary      JSON NOT NULL,
            created_at   TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE run_rows (
            run_id  INTEGER NOT NULL,
            key     VARCHAR NOT NULL,
            label   VARCHAR,
            route   VARCHAR NOT NULL,
            rules   VARCHAR[] NOT NULL,
            matched INTEGER[] NOT NULL,
            reason  VARCHAR,
            PRIMARY KEY (run_id, key)
        )""",
    ]
)

MIGRATIONS.append(
    # 4: a space's revision counts writes to its vectors, so caches notice re-embedded rows
    ["ALTER TABLE spaces ADD COLUMN revision BIGINT DEFAULT 0"]
)

MIGRATIONS.append(
    # 5: labels of record (the latest kept run's or apply's decision per row), run kinds, git commits
    [
        "ALTER TABLE runs ADD COLUMN kind VARCHAR DEFAULT 'run'",
        "ALTER TABLE runs ADD COLUMN git_commit VARCHAR",
        "ALTER TABLE runs ADD COLUMN rows_routed BIGINT",
        """CREATE TABLE applied (
            key        VARCHAR PRIMARY KEY,
            label      VARCHAR,
            route      VARCHAR NOT NULL,
            run_id     INTEGER NOT NULL,
            applied_at TIMESTAMP NOT NULL
        )""",
        "UPDATE runs SET rows_routed = (SELECT count(*) FROM run_rows WHERE run_rows.run_id = runs.id)",
        # The newest kept run of each row becomes its label of record.
        """INSERT INTO applied SELECT key, arg_max(label, run_id), arg_max(route, run_id), max(run_id), now()
           FROM run_rows GROUP BY key""",
    ]
)

SCHEMA_VERSION = len(MIGRATIONS)


class Connected(Protocol):
    """Anything with a DuckDB connection: a :class:`Store`, or the REPL's in-memory copy of one."""

    con: duckdb.DuckDBPyConnection


_SPACE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")


class StoreError(LabelQLError):
    """A problem with the database file itself (missing, locked, too new)."""


@dataclass(frozen=True)
class SpaceInfo:
    """One embedding space as recorded in the ``spaces`` table."""

    name: str
    id: int
    provider: str
    model_id: str
    dim: int
    fingerprint: str
    random_weights: bool
    params: dict[str, Any]

    @property
    def table(self) -> str:
        """The vector table's name: derived from the numeric id, never from user text."""
        return f"vectors_{int(self.id)}"


class Store:
    """An open LabelQL database.  Use :meth:`open` (or :meth:`create`) rather than the constructor."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self.con = con

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False, read_only: bool = False) -> Store:
        """Open (and migrate) a database; with ``create`` a missing file is made.

        A database held by another process raises :class:`StoreError` with a plain message.
        """
        p = Path(path)
        if not p.exists() and not create:
            raise StoreError(
                f"no LabelQL database at {p}",
                hint=f"create it with `labelql init --db {p}` (or `labelql ingest ... --db {p}`)",
            )
        if p.exists() and p.is_dir():
            raise StoreError(f"{p} is a directory, not a database file")
        try:
            con = duckdb.connect(str(p), read_only=read_only)
        except duckdb.IOException as e:
            raise _locked_or_io(p, e) from None
        except duckdb.Error as e:
            raise StoreError(f"cannot open {p} as a DuckDB database: {_first_line(e)}") from None
        store = cls(p, con)
        if not read_only:
            store.migrate()
        else:
            store.check_version()
        return store

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Store:
        return cls.open(path, create=True)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------------
    def version(self) -> int:
        if (
            _scalar(
                self.con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
            )
            == 0
        ):
            return 0
        return _scalar(self.con, "SELECT max(version) FROM schema_version")

    def check_version(self) -> int:
        v = self.version()
        if v > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {v}, newer than this LabelQL understands ({SCHEMA_VERSION})",
                hint="upgrade LabelQL to open it",
            )
        return v

    def migrate(self) -> int:
        """Apply every migration newer than the database's version; return the new version."""
        current = self.check_version()
        if current == SCHEMA_VERSION:
            return current
        with self.transaction():
            if current == 0:
                self.con.execute(
                    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    self.con.execute(statement)
                self.con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        return SCHEMA_VERSION

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- spaces ----------------------------------------------------------------------------------
    def spaces(self) -> list[SpaceInfo]:
        rows = self.con.execute(
            "SELECT name, id, provider, model_id, dim, fingerprint, random_weights, params "
            "FROM spaces ORDER BY id"
        ).fetchall()
        return [_space(r) for r in rows]

    def space(self, name: str) -> SpaceInfo | None:
        row = self.con.execute(
            "SELECT name, id, provider, model_id, dim, fingerprint, random_weights, params "
            "FROM spaces WHERE name = ?",
            [name],
        ).fetchall()
        return _space(row[0]) if row else None

    def create_space(
        self,
        name: str,
        *,
        provider: str,
        model_id: str,
        dim: int,
        fingerprint: str,
        random_weights: bool = False,
        params: dict[str, Any] | None = None,
    ) -> SpaceInfo:
        """Register a space and create its vector table (``FLOAT[dim]``, L2-normalised, raw norm kept)."""
        if not _SPACE_NAME.match(name):
            raise LabelQLError(
                f"invalid space name {name!r}",
                hint="use letters, digits, '_', '.', '-' (starting with a letter or '_'), at most 64",
            )
        if not 1 <= dim <= 65535:
            raise LabelQLError(f"invalid embedding dimension {dim}")
        space_id = _scalar(self.con, "SELECT coalesce(max(id), 0) + 1 FROM spaces")
        self.con.execute(
            "INSERT INTO spaces (name, id, provider, model_id, dim, fingerprint, random_weights, params, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, now())",
            [name, space_id, provider, model_id, dim, fingerprint, random_weights, json.dumps(params or {})],
        )
        info = self.space(name)
        assert info is not None
        # The table name comes from an integer id and the dimension from a checked int: no user text.
        self.con.execute(
            f"CREATE TABLE {info.table} (key VARCHAR PRIMARY KEY, vec FLOAT[{int(dim)}] NOT NULL, "
            f"norm FLOAT NOT NULL)"
        )
        return info

    def drop_space(self, name: str) -> None:
        """Remove a space, its vectors and everything computed from them."""
        info = self.space(name)
        if info is None:
            return
        self.con.execute(f"DROP TABLE IF EXISTS {info.table}")
        self.con.execute("DELETE FROM spaces WHERE name = ?", [name])
        self.con.execute(
            "DELETE FROM scores WHERE signal IN (SELECT id FROM signals WHERE space = ?)", [name]
        )
        self.con.execute("DELETE FROM signals WHERE space = ?", [name])
        self.con.execute("DELETE FROM prompt_vectors WHERE space = ?", [name])
        maps = [m for (m,) in self.con.execute("SELECT id FROM maps WHERE space = ?", [name]).fetchall()]
        for m in maps:
            self.con.execute(
                "DELETE FROM cluster_assign WHERE run_id IN (SELECT id FROM cluster_runs WHERE map_id = ?)",
                [m],
            )
            self.con.execute("DELETE FROM cluster_runs WHERE map_id = ?", [m])
            self.con.execute("DELETE FROM map_coords WHERE map_id = ?", [m])
        self.con.execute("DELETE FROM maps WHERE space = ?", [name])

    def cache_dir(self) -> Path:
        """A folder beside the database for derived files (memory-mapped matrices, fitted models)."""
        d = self.path.parent / f"{self.path.stem}_cache"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def data_version(self, space: SpaceInfo) -> str:
        """Changes whenever the space's vectors change (rows added, removed or re-embedded)."""
        rows = self.con.execute(
            f"SELECT count(*), coalesce(bit_xor(hash(key)), 0), coalesce(sum(norm), 0) FROM {space.table}"
        ).fetchall()
        n, h, s = rows[0]
        # created_at tells apart two databases made at the same path; revision counts vector rewrites.
        return f"{self.version_base(space)}{n}-{int(h):x}-{float(s):.6g}"

    def version_base(self, space: SpaceInfo) -> str:
        """The part of :meth:`data_version` that only a rewrite changes (a new model, a re-embedded or
        deleted row): while it stays, vectors were only *added*, and caches may be extended."""
        meta = self.con.execute(
            "SELECT created_at, revision FROM spaces WHERE name = ?", [space.name]
        ).fetchall()
        created, revision = meta[0] if meta else ("", 0)
        return f"{space.id}-{space.fingerprint[:12]}-{created}-{revision}-"

    def bump_revision(self, table: str) -> None:
        """Record that a space's existing vectors changed (deleted or re-embedded rows): appends do not
        count, so caches built on the older vectors may be extended (see :meth:`version_base`)."""
        space_id = int(table.removeprefix("vectors_"))
        self.con.execute("UPDATE spaces SET revision = revision + 1 WHERE id = ?", [space_id])

    # -- errors ----------------------------------------------------------------------------------
    def record_errors(
        self, stage: str, source: str | None, errors: list[tuple[str | None, str | None, str]]
    ) -> None:
        """Record (key, path, message) rows; earlier errors for the same stage and path are replaced."""
        if not errors:
            return
        paths = [p for _, p, _ in errors if p is not None]
        keys = [k for k, p, _ in errors if p is None and k is not None]
        if paths:
            self.con.execute(
                "DELETE FROM ingest_errors WHERE stage = ? AND path IN (SELECT unnest(?::VARCHAR[]))",
                [stage, paths],
            )
        if keys:
            self.con.execute(
                "DELETE FROM ingest_errors WHERE stage = ? AND path IS NULL "
                "AND key IN (SELECT unnest(?::VARCHAR[]))",
                [stage, keys],
            )
        self.con.executemany(
            "INSERT INTO ingest_errors (key, path, stage, message, source, created_at) "
            "VALUES (?, ?, ?, ?, ?, now())",
            [[k, p, stage, m, source] for k, p, m in errors],
        )

    def clear_errors(self, stage: str, paths: list[str]) -> None:
        """Forget earlier errors for paths that now read cleanly."""
        if paths:
            self.con.execute(
                "DELETE FROM ingest_errors WHERE stage = ? AND path IN (SELECT unnest(?::VARCHAR[]))",
                [stage, paths],
            )

    # -- summary ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Rows, errors, spaces and gold coverage: what ``labelql info`` prints."""
        con = self.con
        total = _scalar(con, "SELECT count(*) FROM rows")
        by_kind = dict(con.execute("SELECT kind, count(*) FROM rows GROUP BY kind ORDER BY kind").fetchall())
        errors = dict(
            con.execute("SELECT stage, count(*) FROM ingest_errors GROUP BY stage ORDER BY stage").fetchall()
        )
        spaces = []
        for s in self.spaces():
            count = _scalar(con, f"SELECT count(*) FROM {s.table}")
            spaces.append(
                {
                    "name": s.name,
                    "provider": s.provider,
                    "model_id": s.model_id,
                    "dim": s.dim,
                    "vectors": count,
                    "coverage": (count / total) if total else 0.0,
                    "fingerprint": s.fingerprint[:16],
                    "random_weights": s.random_weights,
                }
            )
        gold_rows = con.execute(
            "SELECT source, label, count(DISTINCT key) FROM gold WHERE key IN (SELECT key FROM rows) "
            "GROUP BY source, label ORDER BY source, label"
        ).fetchall()
        gold_keys = _scalar(con, "SELECT count(DISTINCT key) FROM gold WHERE key IN (SELECT key FROM rows)")
        return {
            "db": str(self.path),
            "schema_version": self.version(),
            "rows": total,
            "rows_by_kind": by_kind,
            "errors": errors,
            "spaces": spaces,
            "gold": {
                "rows_with_gold": gold_keys,
                "coverage": (gold_keys / total) if total else 0.0,
                "labels": [{"source": s, "label": lab, "rows": n} for s, lab, n in gold_rows],
            },
        }


@contextmanager
def staged(
    con: duckdb.DuckDBPyConnection, name: str, columns: list[str], rows: list[list[Any]]
) -> Iterator[None]:
    """Expose ``rows`` to SQL as the view ``name`` (through Arrow) for one bulk statement.

    DuckDB inserts from an Arrow table orders of magnitude faster than ``executemany``.
    """
    import pyarrow as pa

    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """A query's result as a pyarrow Table (the method's name changed between DuckDB 1 and 2)."""
    result: Any = con.sql(sql, params=params) if params else con.sql(sql)
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        method = getattr(result, name, None)
        if method is not None:
            table = method()
            return table.read_all() if hasattr(table, "read_all") else table
    raise RuntimeError("this DuckDB cannot return Arrow tables")  # pragma: no cover


def upsert_gold(con: duckdb.DuckDBPyConnection, pairs: list[list[str]], source: str) -> None:
    """Insert (key, label) gold rows for ``source``; a changed label replaces the old one."""
    with staged(con, "_gold_in", ["key", "label"], pairs):
        con.execute(
            "INSERT INTO gold (key, label, source, created_at) SELECT key, label, ?, now() FROM _gold_in "
            "ON CONFLICT (key, source) DO UPDATE SET label = excluded.label, "
            "created_at = excluded.created_at "
            "WHERE gold.label <> excluded.label",
            [source],
        )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open and refuses other work.
    rows = con.execute(sql, params or []).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _space(r: tuple[Any, ...]) -> SpaceInfo:
    return SpaceInfo(
        name=r[0],
        id=int(r[1]),
        provider=r[2],
        model_id=r[3],
        dim=int(r[4]),
        fingerprint=r[5],
        random_weights=bool(r[6]),
        params=json.loads(r[7]) if r[7] else {},
    )


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _locked_or_io(path: Path, e: duckdb.IOException) -> StoreError:
    text = str(e)
    if "lock" in text.lower():
        m = re.search(r"\(PID (\d+)\)", text)
        who = f" (PID {m.group(1)})" if m else ""
        return StoreError(
            f"{path} is in use by another process{who}",
            hint="wait for that command to finish, or point --db at another file; "
            "a DuckDB file has one writer at a time",
        )
    return StoreError(f"cannot open {path}: {_first_line(e)}")
