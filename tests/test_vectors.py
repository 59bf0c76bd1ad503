"""Importing embeddings (.npy + keys, .npz, Parquet) and gold labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelql.diagnostics import LabelQLError
from labelql.store import Store
from labelql.vectors import import_embeddings, import_gold


@pytest.fixture
def texts(store: Store) -> Store:
    store.con.execute(
        "INSERT INTO rows (key, kind, text, added_at, source) "
        "SELECT 'r' || i, 'text', 'row ' || i, now(), 'test' FROM range(10) t(i)"
    )
    return store


def stored(store: Store, space: str) -> dict[str, tuple[np.ndarray, float]]:
    info = store.space(space)
    assert info is not None
    return {
        k: (np.asarray(v, dtype=np.float32), n)
        for k, v, n in store.con.execute(f"SELECT key, vec, norm FROM {info.table}").fetchall()
    }


def test_npy_with_keys_file_normalises_and_keeps_norm(texts: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(10, 8)) * 3
    np.save(tmp_path / "v.npy", m)
    (tmp_path / "v.keys.txt").write_text("\n".join(f"r{i}" for i in range(10)))
    report = import_embeddings(texts, tmp_path / "v.npy", space="clip", model_id="my-model")
    assert report.stored == 10 and not report.errors
    got = stored(texts, "clip")
    for i in range(10):
        v, n = got[f"r{i}"]
        assert np.isclose(np.linalg.norm(v), 1.0, atol=1e-5)
        assert np.isclose(n, np.linalg.norm(m[i]), rtol=1e-5)
        assert np.allclose(v * n, m[i], atol=1e-4)
    space = texts.space("clip")
    assert space is not None and (space.dim, space.model_id, space.provider) == (8, "my-model", "precomputed")


def test_bad_rows_are_reported_and_skipped(texts: Store, tmp_path: Path) -> None:
    m = np.ones((6, 4))
    m[1, 2] = np.nan
    m[2, 0] = np.inf
    m[3] = 0.0
    keys = ["r0", "r1", "r2", "r3", "ghost", "r5"]
    np.savez(tmp_path / "v.npz", keys=np.array(keys), vectors=m)
    report = import_embeddings(texts, tmp_path / "v.npz", space="s", model_id="m")
    assert report.stored == 2
    assert dict(report.errors) == {
        "r1": "vector holds NaN or inf",
        "r2": "vector holds NaN or inf",
        "r3": "all-zero vector",
        "ghost": "unknown key (not ingested)",
    }
    errors = texts.con.execute("SELECT key, stage FROM ingest_errors ORDER BY key").fetchall()
    assert errors == [
        ("ghost", "embeddings"),
        ("r1", "embeddings"),
        ("r2", "embeddings"),
        ("r3", "embeddings"),
    ]


def test_parquet_with_ragged_vectors(texts: Store, tmp_path: Path) -> None:
    table = pa.table({"key": ["r0", "r1", "r2"], "embedding": [[1.0, 0.0, 0.0], [0.0, 1.0], [0.5, 0.5, 0.5]]})
    pq.write_table(table, tmp_path / "v.parquet")
    report = import_embeddings(texts, tmp_path / "v.parquet", space="p", model_id="m")
    assert report.stored == 2 and report.errors == [("r1", "wrong dimension 2 (space has 3)")]


def test_reimport_needs_replace_for_another_model(texts: Store, tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", keys=np.array(["r0", "r1"]), vectors=np.eye(2, 4))
    import_embeddings(texts, tmp_path / "a.npz", space="s", model_id="m1")
    same = import_embeddings(texts, tmp_path / "a.npz", space="s", model_id="m1")
    assert (same.stored, same.already_present) == (0, 2)
    with pytest.raises(LabelQLError, match="already holds vectors from model 'm1'"):
        import_embeddings(texts, tmp_path / "a.npz", space="s", model_id="m2")
    np.savez(tmp_path / "b.npz", keys=np.array(["r3"]), vectors=np.ones((1, 6)))
    rep = import_embeddings(texts, tmp_path / "b.npz", space="s", model_id="m2", replace=True)
    assert rep.replaced and rep.stored == 1 and set(stored(texts, "s")) == {"r3"}
    assert texts.space("s").dim == 6  # type: ignore[union-attr]


def test_several_spaces_per_row(texts: Store, tmp_path: Path) -> None:
    for name, d in (("a", 4), ("b", 16)):
        np.savez(tmp_path / f"{name}.npz", keys=np.array(["r0"]), vectors=np.ones((1, d)))
        import_embeddings(texts, tmp_path / f"{name}.npz", space=name, model_id=name)
    assert [(s["name"], s["dim"], s["vectors"]) for s in texts.info()["spaces"]] == [
        ("a", 4, 1),
        ("b", 16, 1),
    ]


def test_npy_without_keys_is_a_clear_error(texts: Store, tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((2, 3)))
    with pytest.raises(LabelQLError, match="keys are missing"):
        import_embeddings(texts, tmp_path / "v.npy", space="s", model_id="m")


def test_gold_import_csv(texts: Store, tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("key,label\nr0,cat\nr1,dog\nghost,cat\nr2,\n")
    report = import_gold(texts, tmp_path / "g.csv", source="audit")
    assert report["stored"] == 2 and {e["key"] for e in report["errors"]} == {"ghost", "r2"}
    assert texts.con.execute("SELECT key, label, source FROM gold ORDER BY key").fetchall() == [
        ("r0", "cat", "audit"),
        ("r1", "dog", "audit"),
    ]
    (tmp_path / "g2.csv").write_text("key,label\nr0,dog\n")
    import_gold(texts, tmp_path / "g2.csv", source="audit")
    assert texts.con.execute("SELECT label FROM gold WHERE key = 'r0'").fetchall() == [("dog",)]
