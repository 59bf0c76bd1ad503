"""Ingestion from folders, manifests and saved Hugging Face datasets, with broken inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BROKEN, GOOD, jpeg_bytes
from labelql.ingest import IngestError, IngestOptions, ingest
from labelql.store import Store


def rows(store: Store) -> dict[str, tuple]:
    return {
        r[0]: r[1:]
        for r in store.con.execute(
            "SELECT key, kind, format, width, height, bytes, sha256 FROM rows"
        ).fetchall()
    }


def test_folder_with_broken_files(store: Store, image_folder: Path) -> None:
    report = ingest(store, str(image_folder), IngestOptions(labels_from_dirs=True))
    broken = len(BROKEN) + 1  # + the dangling link
    assert report.scanned == len(GOOD) + broken
    assert report.added == len(GOOD)
    assert len(report.errors) == broken
    got = rows(store)
    assert set(got) == set(GOOD)  # keys are relative paths; nothing valid lost, nothing broken in
    assert got["cat/png_named_jpg.jpg"][1] == "PNG"
    assert got["dog/rotated.jpg"][2:4] == (20, 40)
    errs = store.con.execute("SELECT path, stage, message FROM ingest_errors ORDER BY path").fetchall()
    assert len(errs) == broken and {e[1] for e in errs} == {"ingest"}
    by_name = {Path(p).name: m for p, _, m in errs}
    assert by_name["empty.jpg"] == "empty file (0 bytes)"
    assert by_name["dangling.jpg"].startswith("unreadable")
    gold = dict(store.con.execute("SELECT key, label FROM gold").fetchall())
    assert gold["cat/plain.jpg"] == "cat" and gold["dog/palette.png"] == "dog" and len(gold) == len(GOOD)


def test_second_ingest_changes_nothing(store: Store, image_folder: Path) -> None:
    ingest(store, str(image_folder), IngestOptions(labels_from_dirs=True))
    before = store.con.execute("SELECT * FROM rows ORDER BY key").fetchall()
    errs_before = store.con.execute("SELECT count(*) FROM ingest_errors").fetchall()
    gold_before = store.con.execute("SELECT * FROM gold ORDER BY key").fetchall()
    again = ingest(store, str(image_folder), IngestOptions(labels_from_dirs=True))
    assert (again.added, again.updated, again.unchanged) == (0, 0, len(GOOD))
    assert store.con.execute("SELECT * FROM rows ORDER BY key").fetchall() == before
    assert store.con.execute("SELECT count(*) FROM ingest_errors").fetchall() == errs_before
    assert store.con.execute("SELECT * FROM gold ORDER BY key").fetchall() == gold_before


def test_changed_bytes_are_reported_and_updated_only_on_request(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes(color=(1, 1, 1)))
    ingest(store, str(root))
    old_sha = rows(store)["a.jpg"][5]
    (root / "a.jpg").write_bytes(jpeg_bytes(size=(50, 50), color=(250, 1, 1)))
    report = ingest(store, str(root))
    assert report.changed_not_updated == ["a.jpg"] and rows(store)["a.jpg"][5] == old_sha
    report = ingest(store, str(root), IngestOptions(update=True))
    assert report.updated == 1 and rows(store)["a.jpg"][5] != old_sha and rows(store)["a.jpg"][2] == 50


def test_fixed_file_clears_its_error(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    ingest(store, str(root))
    assert store.con.execute("SELECT count(*) FROM ingest_errors").fetchall()[0][0] == 1
    (root / "a.jpg").write_bytes(jpeg_bytes())
    assert ingest(store, str(root)).added == 1
    assert store.con.execute("SELECT count(*) FROM ingest_errors").fetchall()[0][0] == 0


def test_strict_aborts_without_writing(store: Store, image_folder: Path) -> None:
    with pytest.raises(IngestError, match="--strict"):
        ingest(store, str(image_folder), IngestOptions(strict=True))
    assert store.con.execute("SELECT count(*) FROM rows").fetchall()[0][0] == 0


def test_parallel_and_serial_checks_agree(store: Store, tmp_path: Path) -> None:
    from labelql.ingest import check_paths

    root = tmp_path / "many"
    root.mkdir()
    paths = []
    for i in range(150):
        p = root / f"{i}.jpg"
        p.write_bytes(jpeg_bytes(size=(10 + i, 12)) if i % 7 else b"")
        paths.append(str(p))
    serial = check_paths(paths, "header", 10**9, workers=1)
    parallel = check_paths(paths, "header", 10**9, workers=2)
    assert serial == parallel and [c.path for c in parallel] == paths
    assert sum(not c.ok for c in parallel) == len(range(0, 150, 7))


def _manifest_rows(root: Path) -> list[dict]:
    (root / "img").mkdir()
    (root / "img" / "a.jpg").write_bytes(jpeg_bytes())
    (root / "img" / "b.jpg").write_bytes(jpeg_bytes(color=(9, 9, 9)))
    (root / "img" / "bad.jpg").write_bytes(b"nope")
    return [
        {"global_key": "k_a", "row_data": "img/a.jpg", "label": "cat", "camera": "x100"},
        {
            "global_key": "k_b",
            "row_data": str((root / "img" / "b.jpg").resolve()),
            "label": None,
            "camera": "z",
        },
        {"global_key": "k_bad", "row_data": "img/bad.jpg", "label": "dog", "camera": "z"},
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifests(store: Store, tmp_path: Path, fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    recs = _manifest_rows(tmp_path)
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    elif fmt == "csv":
        pacsv.write_csv(pa.Table.from_pylist(recs), path)
    else:
        pq.write_table(pa.Table.from_pylist(recs), path)
    report = ingest(store, str(path))
    assert report.added == 2 and len(report.errors) == 1 and report.errors[0][0] == "k_bad"
    meta = dict(store.con.execute("SELECT key, metadata->>'camera' FROM rows").fetchall())
    assert meta == {"k_a": "x100", "k_b": "z"}
    assert store.con.execute("SELECT key, label FROM gold").fetchall() == [("k_a", "cat")]


def test_text_manifest(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    lines = [
        {"global_key": "t1", "text": "a dog runs", "label": "dog"},
        {"global_key": "t2", "text": "a cat sits"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    report = ingest(store, str(path))
    assert report.added == 2
    got = store.con.execute("SELECT key, kind, text, uri FROM rows ORDER BY key").fetchall()
    assert got == [("t1", "text", "a dog runs", None), ("t2", "text", "a cat sits", None)]


def test_duplicate_keys_are_listed(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(
        "".join(json.dumps({"global_key": k, "text": "x"}) + "\n" for k in ["a", "b", "a", "c", "c"])
    )
    with pytest.raises(IngestError, match=r"2 duplicate global keys .*: a, c"):
        ingest(store, str(path))


def test_missing_columns_and_unknown_sources(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(IngestError, match="neither a 'row_data' nor a 'text' column"):
        ingest(store, str(path))
    with pytest.raises(IngestError, match="no such file or folder"):
        ingest(store, str(tmp_path / "nope"))
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(IngestError, match="don't know how to ingest"):
        ingest(store, str(tmp_path / "x.bin"))


def test_saved_hugging_face_dataset(store: Store, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    import io

    from PIL import Image

    def png(c: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (c, c, c)).save(buf, "PNG")
        return buf.getvalue()

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "labels": datasets.ClassLabel(names=["cat", "dog"]),
            "note": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": png(i * 20), "path": None} for i in range(5)]
            + [{"bytes": b"junk", "path": None}],
            "labels": [0, 1, 0, 1, 0, 1],
            "note": list("abcdef"),
        },
        features=features,
    )
    saved = tmp_path / "cats_vs_dogs"
    ds.save_to_disk(str(saved))
    report = ingest(store, str(saved), IngestOptions(key_prefix="cat_vs_dog_"))
    assert report.added == 5 and len(report.errors) == 1 and report.errors[0][0] == "cat_vs_dog_5"
    gold = dict(store.con.execute("SELECT key, label FROM gold").fetchall())
    assert gold == {
        "cat_vs_dog_0": "cat",
        "cat_vs_dog_1": "dog",
        "cat_vs_dog_2": "cat",
        "cat_vs_dog_3": "dog",
        "cat_vs_dog_4": "cat",
    }
    uri = store.con.execute("SELECT uri FROM rows WHERE key = 'cat_vs_dog_3'").fetchall()[0][0]
    assert Path(uri).read_bytes() == png(60)  # the image's own bytes, written once beside the database
    assert ingest(store, str(saved), IngestOptions(key_prefix="cat_vs_dog_")).unchanged == 5


def test_hub_name_offline_fails_in_one_clear_line(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(IngestError) as info:
        ingest(store, "hf:surely-not-cached/cats_vs_dogs_xyz")
    assert info.value.message.startswith(
        "cannot load hf:surely-not-cached/cats_vs_dogs_xyz from the Hugging Face Hub"
    )
    assert "\n" not in info.value.message and "save_to_disk" in (info.value.hint or "")


def test_real_photos(store: Store, sample_dir: Path) -> None:
    report = ingest(store, str(sample_dir), IngestOptions(labels_from_dirs=True))
    assert (report.added, len(report.errors), report.gold_added) == (500, 0, 500)
    counts = dict(store.con.execute("SELECT label, count(*) FROM gold GROUP BY label").fetchall())
    assert counts == {"cat": 250, "dog": 250}
    assert store.con.execute("SELECT count(DISTINCT sha256), min(width) > 0 FROM rows").fetchall()[0] == (
        500,
        True,
    )


def test_cli_ingest_json_and_info(tmp_path: Path, image_folder: Path) -> None:
    db = tmp_path / "cli.duckdb"
    env = {**os.environ, "LABELQL_DB": str(db)}
    out = subprocess.run(
        [sys.executable, "-m", "labelql.cli", "ingest", str(image_folder), "--labels-from-dirs", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["added"] == len(GOOD) and len(data["errors"]) == len(BROKEN) + 1
    info = json.loads(
        subprocess.run(
            [sys.executable, "-m", "labelql.cli", "info", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    )
    assert info["rows"] == len(GOOD) and info["errors"] == {"ingest": len(BROKEN) + 1}
    assert {(g["label"], g["rows"]) for g in info["gold"]["labels"]} == {("cat", 3), ("dog", 6)}
