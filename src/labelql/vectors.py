"""Importing embeddings and gold labels from files.

Vectors are stored L2-normalised as ``FLOAT[d]`` with their raw norm; a row whose vector is unusable
(unknown key, wrong dimension, NaN/inf, all zeros) is recorded in ``ingest_errors`` and skipped.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelql.diagnostics import LabelQLError
from labelql.store import Store, upsert_gold

KEY_COLUMNS = ("key", "global_key")
VECTOR_COLUMNS = ("vector", "embedding", "vec")


@dataclass
class ImportReport:
    """What an import did."""

    file: str
    space: str
    read: int = 0
    stored: int = 0
    already_present: int = 0
    replaced: bool = False
    errors: list[tuple[str | None, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "space": self.space,
            "read": self.read,
            "stored": self.stored,
            "already_present": self.already_present,
            "replaced": self.replaced,
            "errors": [{"key": k, "message": m} for k, m in self.errors],
        }


def read_vectors(
    path: Path, keys_file: Path | None = None, key_column: str | None = None, vector_column: str | None = None
) -> tuple[list[str], list[np.ndarray[Any, Any]]]:
    """Keys and vectors from ``.npy`` (+ keys file), ``.npz`` (``keys`` + ``vectors``) or Parquet."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise LabelQLError(f"no such file: {path}")
    if suffix == ".npy":
        kf = keys_file or _default_keys_file(path)
        if kf is None or not kf.exists():
            raise LabelQLError(
                f"{path} holds vectors only; their keys are missing",
                hint="pass --keys FILE (one key per line), or put them in "
                f"{path.with_suffix('.keys.txt').name} beside it",
            )
        matrix = _load_npy(path)
        keys = [line.rstrip("\r\n") for line in kf.read_text().splitlines() if line.strip()]
        if len(keys) != len(matrix):
            raise LabelQLError(f"{kf} has {len(keys)} keys but {path} has {len(matrix)} vectors")
        return keys, list(matrix)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            kname = next((n for n in ("keys", "key", "global_key") if n in names), None)
            vname = next((n for n in ("vectors", "embeddings", "vector", "embedding") if n in names), None)
            if kname is None or vname is None:
                raise LabelQLError(
                    f"{path} needs arrays 'keys' and 'vectors'", hint=f"found: {', '.join(sorted(names))}"
                )
            matrix = np.asarray(z[vname])
            keys = [str(k) for k in z[kname].tolist()]
        if matrix.ndim != 2 or len(keys) != len(matrix):
            raise LabelQLError(f"{path}: 'vectors' must be 2-D with one row per key")
        return keys, list(matrix)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        cols = table.column_names
        kc = key_column or next((c for c in KEY_COLUMNS if c in cols), None)
        vc = vector_column or next((c for c in VECTOR_COLUMNS if c in cols), None)
        if kc is None or vc is None or kc not in cols or vc not in cols:
            raise LabelQLError(
                f"{path} needs a key column and a vector column",
                hint=f"columns: {', '.join(cols)}; choose with --key-column / --vector-column",
            )
        keys = [str(k) for k in table.column(kc).to_pylist()]
        vectors = [
            np.asarray(v if v is not None else [], dtype=np.float64) for v in table.column(vc).to_pylist()
        ]
        return keys, vectors
    raise LabelQLError(
        f"don't know how to read vectors from {path}", hint="use .npy (+ keys), .npz or .parquet"
    )


def _default_keys_file(path: Path) -> Path | None:
    for cand in (path.with_suffix(".keys.txt"), path.with_suffix(".txt"), path.parent / "keys.txt"):
        if cand.exists():
            return cand
    return None


def _load_npy(path: Path) -> np.ndarray[Any, Any]:
    try:
        m = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise LabelQLError(f"cannot read {path}: {e}") from None
    if m.ndim != 2:
        raise LabelQLError(f"{path} must hold a 2-D array (rows x dimension), not shape {m.shape}")
    return m


def fingerprint_for(provider: str, model_id: str, extra: str = "") -> str:
    """A stable fingerprint of the model that made a space's vectors."""
    return hashlib.sha256(f"{provider}\0{model_id}\0{extra}".encode()).hexdigest()


def import_embeddings(
    store: Store,
    path: Path,
    *,
    space: str,
    model_id: str,
    replace: bool = False,
    keys_file: Path | None = None,
    key_column: str | None = None,
    vector_column: str | None = None,
    fingerprint: str | None = None,
) -> ImportReport:
    """Import vectors for ``space``; see the module docstring for what is skipped and why."""
    keys, vectors = read_vectors(path, keys_file, key_column, vector_column)
    report = ImportReport(file=str(path), space=space, read=len(keys))
    dup = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dup:
        raise LabelQLError(f"{len(dup)} keys appear twice in {path}: {', '.join(dup[:10])}")
    fp = fingerprint or fingerprint_for("precomputed", model_id)
    existing = store.space(space)
    lengths = Counter(len(v) for v in vectors)
    dim = existing.dim if existing and not replace else (lengths.most_common(1)[0][0] if lengths else 0)
    if existing is not None and not replace and existing.fingerprint != fp:
        raise LabelQLError(
            f"space {space!r} already holds vectors from model {existing.model_id!r}",
            hint="pass --replace to replace the whole space, or import into another --space",
        )
    if dim == 0:
        raise LabelQLError(f"{path} holds no vectors")

    known = {
        k
        for (k,) in store.con.execute(
            "SELECT key FROM rows WHERE key IN (SELECT unnest(?::VARCHAR[]))", [keys]
        ).fetchall()
    }
    good_keys: list[str] = []
    good_vecs: list[np.ndarray[Any, Any]] = []
    for k, v in zip(keys, vectors, strict=True):
        v = np.asarray(v, dtype=np.float64)
        if k not in known:
            report.errors.append((k, "unknown key (not ingested)"))
        elif v.ndim != 1 or len(v) != dim:
            report.errors.append(
                (k, f"wrong dimension {len(v) if v.ndim == 1 else v.shape} (space has {dim})")
            )
        elif not np.all(np.isfinite(v)):
            report.errors.append((k, "vector holds NaN or inf"))
        elif not np.any(v):
            report.errors.append((k, "all-zero vector"))
        else:
            good_keys.append(k)
            good_vecs.append(v)

    with store.transaction():
        if existing is not None and replace:
            store.drop_space(space)
            existing = None
            report.replaced = True
        info = existing or store.create_space(
            space,
            provider="precomputed",
            model_id=model_id,
            dim=dim,
            fingerprint=fp,
            params={"file": str(path)},
        )
        if good_keys:
            have = {
                k
                for (k,) in store.con.execute(
                    f"SELECT key FROM {info.table} WHERE key IN (SELECT unnest(?::VARCHAR[]))", [good_keys]
                ).fetchall()
            }
            report.already_present = len(have)
            fresh = [(k, v) for k, v in zip(good_keys, good_vecs, strict=True) if k not in have]
            if fresh:
                store_vectors(store, info.table, [k for k, _ in fresh], np.stack([v for _, v in fresh]))
            report.stored = len(fresh)
        store.record_errors("embeddings", space, [(k, None, f"{path.name}: {m}") for k, m in report.errors])
    return report


def store_vectors(store: Store, table: str, keys: list[str], matrix: np.ndarray[Any, Any]) -> None:
    """Append L2-normalised vectors (and their raw norms) to a space's table.

    Appending is not a rewrite: the space's revision stays, so caches (scores) are extended to the new
    rows rather than recomputed; the data version still changes with the row count and key hash.
    """
    import pyarrow as pa

    m = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1)
    unit = (m / norms[:, None]).astype(np.float32)
    d = unit.shape[1]
    vec = pa.FixedSizeListArray.from_arrays(pa.array(unit.reshape(-1)), d)
    arrow = pa.table({"key": keys, "vec": vec, "norm": norms.astype(np.float32)})
    store.con.register("_vectors_in", arrow)
    try:
        store.con.execute(f"INSERT INTO {table} SELECT key, vec, norm FROM _vectors_in")
    finally:
        store.con.unregister("_vectors_in")


def import_gold(store: Store, path: Path, source: str = "import") -> dict[str, Any]:
    """Import (key, label) ground truth from CSV or Parquet; unknown keys are reported and skipped."""
    import pyarrow as pa

    if not path.exists():
        raise LabelQLError(f"no such file: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        else:
            raise LabelQLError(f"don't know how to read gold labels from {path}", hint="use .csv or .parquet")
    except pa.ArrowInvalid as e:
        raise LabelQLError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    cols = table.column_names
    kc = next((c for c in KEY_COLUMNS if c in cols), None)
    if kc is None or "label" not in cols:
        raise LabelQLError(
            f"{path} needs columns 'key' (or 'global_key') and 'label'", hint=f"found: {', '.join(cols)}"
        )
    pairs = [
        (str(k), v)
        for k, v in zip(table.column(kc).to_pylist(), table.column("label").to_pylist(), strict=True)
    ]
    known = {
        k
        for (k,) in store.con.execute(
            "SELECT key FROM rows WHERE key IN (SELECT unnest(?::VARCHAR[]))", [[k for k, _ in pairs]]
        ).fetchall()
    }
    errors: list[tuple[str | None, str | None, str]] = []
    good: list[list[str]] = []
    for k, label in pairs:
        if k not in known:
            errors.append((k, None, f"{path.name}: unknown key (not ingested)"))
        elif label is None or str(label).strip() == "":
            errors.append((k, None, f"{path.name}: empty label"))
        else:
            good.append([k, str(label)])
    dup = sorted(k for k, n in Counter(k for k, _ in good).items() if n > 1)
    if dup:
        raise LabelQLError(f"{len(dup)} keys have more than one label in {path}: {', '.join(dup[:10])}")
    with store.transaction() as con:
        if good:
            upsert_gold(con, good, source)
        store.record_errors("gold", source, errors)
    return {
        "file": str(path),
        "source": source,
        "read": len(pairs),
        "stored": len(good),
        "errors": [{"key": k, "message": m} for k, _, m in errors],
    }


__all__ = [
    "ImportReport",
    "fingerprint_for",
    "import_embeddings",
    "import_gold",
    "read_vectors",
    "store_vectors",
]
