"""Getting data in: folders of images, manifests (CSV / Parquet / JSONL) and Hugging Face datasets.

Every source becomes a list of :class:`Item` (key, where the data is, optional gold label and
metadata); images are checked in worker processes; then one transaction writes the rows.  A broken
file becomes one row in ``ingest_errors`` and the run goes on, unless ``strict`` is set.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelql.diagnostics import LabelQLError
from labelql.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageCheck, Verify, check_many
from labelql.store import Store, staged, upsert_gold

MANIFEST_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
GOLD_SOURCE = "ingest"
_CHUNK = 64
_ROW_COLUMNS = [
    "key",
    "kind",
    "uri",
    "text",
    "source",
    "width",
    "height",
    "format",
    "bytes",
    "sha256",
    "metadata",
]


class IngestError(LabelQLError):
    """A problem with the source as a whole (as opposed to one bad file)."""


@dataclass(frozen=True)
class Item:
    """One row to ingest: an image file (``path``) or a text (``text``)."""

    key: str
    path: str | None = None
    text: str | None = None
    label: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class IngestOptions:
    key_prefix: str = ""
    labels_from_dirs: bool = False
    verify: Verify = "header"
    max_pixels: int = DEFAULT_MAX_PIXELS
    strict: bool = False
    update: bool = False
    source_tag: str | None = None
    workers: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    split: str | None = None


@dataclass
class IngestReport:
    """What an ingest did, for the summary table and ``--json``."""

    source: str
    scanned: int = 0
    added: int = 0
    unchanged: int = 0
    updated: int = 0
    changed_not_updated: list[str] = field(default_factory=list)
    errors: list[tuple[str | None, str | None, str]] = field(default_factory=list)
    gold_added: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "scanned": self.scanned,
            "added": self.added,
            "unchanged": self.unchanged,
            "updated": self.updated,
            "changed_not_updated": self.changed_not_updated,
            "errors": [{"key": k, "path": p, "message": m} for k, p, m in self.errors],
            "gold_added": self.gold_added,
        }


Progress = Callable[[int], None]


# -- sources -------------------------------------------------------------------------------------
def scan_folder(root: Path, prefix: str = "", labels_from_dirs: bool = False) -> list[Item]:
    """Every image under ``root`` (recursive, sorted), keyed ``<prefix><relative path>``."""
    items: list[Item] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            label = rel.split("/", 1)[0] if labels_from_dirs and "/" in rel else None
            items.append(Item(key=prefix + rel, path=os.path.abspath(full), label=label))
    return items


def read_manifest(path: Path, prefix: str = "") -> list[Item]:
    """Rows of a CSV / Parquet / JSONL manifest with ``global_key``, ``row_data`` (or ``text``),
    optional ``label`` and any other columns as metadata.  Relative paths are taken from the
    manifest's folder."""
    import pyarrow as pa

    kind = MANIFEST_SUFFIXES[path.suffix.lower()]
    try:
        if kind == "csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
        elif kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.json as pajson

            table = pajson.read_json(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise IngestError(f"cannot read manifest {path}: {str(e).splitlines()[0]}") from None
    cols = set(table.column_names)
    if "row_data" not in cols and "text" not in cols:
        raise IngestError(
            f"manifest {path} has neither a 'row_data' nor a 'text' column",
            hint=f"columns found: {', '.join(table.column_names)}",
        )
    base = path.parent
    items = []
    reserved = {"global_key", "row_data", "text", "label"}
    for i, rec in enumerate(table.to_pylist()):
        meta = {k: v for k, v in rec.items() if k not in reserved and v is not None}
        label = rec.get("label")
        label = None if label is None or str(label) == "" else str(label)
        text = rec.get("text")
        row_data = rec.get("row_data")
        if text is not None:
            key = rec.get("global_key") or f"{prefix}{i}"
            items.append(Item(key=str(key), text=str(text), label=label, metadata=meta or None))
            continue
        if row_data is None:
            raise IngestError(f"manifest {path} row {i + 1} has no row_data")
        data = str(row_data)
        if "://" in data and not data.startswith("file://"):
            full = data
        else:
            p = Path(data.removeprefix("file://"))
            full = os.path.abspath(p if p.is_absolute() else base / p)
        key = rec.get("global_key")
        if key is None or str(key) == "":
            rel = Path(data).as_posix()
            key = prefix + rel
        items.append(Item(key=str(key), path=full, label=label, metadata=meta or None))
    return items


def read_hf(spec: str, media_dir: Path, options: IngestOptions) -> list[Item]:
    """A Hugging Face dataset: ``hf:NAME[:split]`` from the Hub, or a folder made by ``save_to_disk``.

    Image bytes are written once to ``media_dir`` so later stages read ordinary files.
    """
    from labelql import hub

    online = not spec.startswith("hf:") or hub.ensure_mode()
    try:
        import datasets
    except ImportError:
        raise IngestError(
            "Hugging Face datasets need the 'hf' extra", hint="pip install 'labelql[hf]'"
        ) from None
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        split = split or options.split or "train"
        try:
            ds = datasets.load_dataset(name, split=split)
        except Exception as e:  # the hub client raises many types offline; all mean the same here
            why = (
                "no network access and no cached copy"
                if not online
                else (str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
            )
            raise IngestError(
                f"cannot load {spec} from the Hugging Face Hub: {why}",
                hint="with no network, download it elsewhere, save it with `Dataset.save_to_disk(DIR)` "
                "and ingest DIR",
            ) from None
        dataset_name = name.rsplit("/", 1)[-1]
    else:
        path = Path(spec)
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise IngestError(f"cannot read saved dataset {path}: {str(e).splitlines()[0][:200]}") from None
        if isinstance(ds, datasets.DatasetDict):
            split = options.split or ("train" if "train" in ds else next(iter(ds)))
            if split not in ds:
                raise IngestError(
                    f"saved dataset {path} has no split {split!r}", hint=f"splits: {', '.join(ds)}"
                )
            ds = ds[split]
        dataset_name = path.name
    features = ds.features
    image_col = options.image_column or next(
        (c for c, f in features.items() if isinstance(f, datasets.Image)), None
    )
    if image_col is None or image_col not in features:
        raise IngestError(
            f"no image column in {spec}",
            hint=f"choose one with --image-column (columns: {', '.join(features)})",
        )
    label_col = options.label_column or next((c for c in ("label", "labels") if c in features), None)
    if label_col is not None and label_col not in features:
        raise IngestError(f"no column {label_col!r} in {spec}", hint=f"columns: {', '.join(features)}")
    names = getattr(features[label_col], "names", None) if label_col else None
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    prefix = options.key_prefix or f"{dataset_name}_"
    media_dir.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    others = [c for c in features if c not in (image_col, label_col)]
    for i, rec in enumerate(ds):
        img = rec[image_col] or {}
        key = f"{prefix}{i}"
        data = img.get("bytes")
        src_path = img.get("path")
        if data is None and src_path and Path(src_path).exists():
            data = Path(src_path).read_bytes()
        suffix = Path(src_path).suffix.lower() if src_path else ""
        target = media_dir / (_safe_file_name(key) + (suffix if suffix in IMAGE_EXTENSIONS else ".img"))
        if data is not None and (not target.exists() or target.read_bytes() != data):
            target.write_bytes(data)
        label = None
        if label_col is not None and rec[label_col] is not None:
            v = rec[label_col]
            label = names[v] if names is not None and isinstance(v, int) else str(v)
        meta = {c: rec[c] for c in others if _jsonable(rec[c])}
        meta["hf_index"] = i
        items.append(
            Item(
                key=key,
                path=str(target.resolve()) if data is not None else str(target),
                label=label,
                metadata=meta,
            )
        )
    return items


def _safe_file_name(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def media_dir_for(db_path: Path) -> Path:
    return db_path.parent / f"{db_path.stem}_media"


def collect(source: str, db_path: Path, options: IngestOptions) -> list[Item]:
    """Turn a SOURCE argument into items, choosing the reader by what SOURCE is."""
    if source.startswith("hf:"):
        return read_hf(source, media_dir_for(db_path), options)
    path = Path(source)
    if not path.exists():
        raise IngestError(f"no such file or folder: {source}")
    if path.is_dir():
        if (
            (path / "dataset_info.json").exists()
            or (path / "dataset_dict.json").exists()
            or (path / "state.json").exists()
        ):
            return read_hf(str(path), media_dir_for(db_path), options)
        return scan_folder(path, options.key_prefix, options.labels_from_dirs)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        if options.labels_from_dirs:
            raise IngestError(
                "--labels-from-dirs applies to folders, not manifests",
                hint="put labels in the manifest's 'label' column",
            )
        return read_manifest(path, options.key_prefix)
    raise IngestError(
        f"don't know how to ingest {source}",
        hint="give a folder of images, a manifest (.csv, .parquet, .jsonl), a saved dataset folder "
        "or hf:NAME",
    )


# -- checking ------------------------------------------------------------------------------------
def check_paths(
    paths: Sequence[str],
    verify: Verify,
    max_pixels: int,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[ImageCheck]:
    """Check images in parallel worker processes (in order); small inputs stay in this process."""
    chunks = [list(paths[i : i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    results: list[ImageCheck] = []
    if n_workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.extend(check_many((chunk, verify, max_pixels)))
            if progress:
                progress(len(chunk))
        return results
    # fork is cheap and the workers touch only files, never the open database.
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        for chunk_result in pool.map(check_many, [(c, verify, max_pixels) for c in chunks]):
            results.extend(chunk_result)
            if progress:
                progress(len(chunk_result))
    return results


def _duplicates(items: Sequence[Item]) -> list[str]:
    counts = Counter(i.key for i in items)
    return sorted(k for k, n in counts.items() if n > 1)


# -- writing -------------------------------------------------------------------------------------
def ingest(
    store: Store,
    source: str,
    options: IngestOptions = IngestOptions(),
    *,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest SOURCE into ``store``; see the module docstring for the rules."""
    items = collect(source, store.path, options)
    dups = _duplicates(items)
    if dups:
        shown = ", ".join(dups[:20]) + (f" (and {len(dups) - 20} more)" if len(dups) > 20 else "")
        raise IngestError(
            f"{len(dups)} duplicate global keys in {source}: {shown}",
            hint="global keys must be unique; fix the manifest or use --key-prefix",
        )
    tag = options.source_tag or (source if source.startswith("hf:") else Path(source).name)
    report = IngestReport(source=source, scanned=len(items))
    if on_total:
        on_total(len(items))

    image_items = [i for i in items if i.path is not None and "://" not in i.path]
    remote = {i.key for i in items if i.path is not None and "://" in i.path}
    checks = {
        c.path: c
        for c in check_paths(
            [i.path for i in image_items if i.path],
            options.verify,
            options.max_pixels,
            options.workers,
            progress,
        )
    }
    if progress and (len(items) - len(image_items)):
        progress(len(items) - len(image_items))

    good: list[tuple[Item, ImageCheck | None]] = []
    for item in items:
        if item.text is not None:
            good.append((item, None))
        elif item.key in remote:
            report.errors.append(
                (
                    item.key,
                    item.path,
                    "remote URI: fetching images over the network is not supported; "
                    "download them and point row_data at local files",
                )
            )
        else:
            assert item.path is not None
            found = checks[item.path]
            if found.ok:
                good.append((item, found))
            else:
                report.errors.append((item.key, item.path, found.error or "unknown error"))
    if report.errors and options.strict:
        first = report.errors[0]
        raise IngestError(
            f"{len(report.errors)} of {len(items)} inputs failed and --strict is set; nothing was written. "
            f"First: {first[1] or first[0]}: {first[2]}"
        )

    existing = {
        k: (uri, text, sha)
        for k, uri, text, sha in store.con.execute(
            "SELECT key, uri, text, sha256 FROM rows WHERE key IN (SELECT unnest(?::VARCHAR[]))",
            [[i.key for i, _ in good]],
        ).fetchall()
    }
    new_rows: list[list[Any]] = []
    changed_rows: list[list[Any]] = []
    for item, check in good:
        if check is None:
            assert item.text is not None
            text_bytes = item.text.encode()
            row = [
                item.key,
                "text",
                None,
                item.text,
                tag,
                None,
                None,
                "text",
                len(text_bytes),
                hashlib.sha256(text_bytes).hexdigest(),
                _meta(item),
            ]
        else:
            row = [
                item.key,
                "image",
                item.path,
                None,
                tag,
                check.width,
                check.height,
                check.format,
                check.bytes,
                check.sha256,
                _meta(item),
            ]
        old = existing.get(item.key)
        if old is None:
            new_rows.append(row)
        elif (old[0], old[1], old[2]) == (row[2], row[3], row[9]):
            report.unchanged += 1
        elif options.update:
            changed_rows.append(row)
        else:
            report.changed_not_updated.append(item.key)

    with store.transaction() as con:
        if new_rows:
            with staged(con, "_new_rows", _ROW_COLUMNS, new_rows):
                con.execute(
                    "INSERT INTO rows (key, kind, uri, text, added_at, source, width, height, format, bytes, "
                    "sha256, metadata) SELECT key, kind, uri, text, now(), source, width, height, format, "
                    "bytes, sha256, metadata::JSON FROM _new_rows"
                )
        for row in changed_rows:
            con.execute(
                "UPDATE rows SET kind = ?, uri = ?, text = ?, source = ?, width = ?, height = ?, format = ?, "
                "bytes = ?, sha256 = ?, metadata = ? WHERE key = ?",
                [*row[1:], row[0]],
            )
        if changed_rows:
            # Vectors of changed rows describe the old bytes: drop them so they are recomputed.
            for space in store.spaces():
                con.execute(
                    f"DELETE FROM {space.table} WHERE key IN (SELECT unnest(?::VARCHAR[]))",
                    [[r[0] for r in changed_rows]],
                )
                store.bump_revision(space.table)
        report.added = len(new_rows)
        report.updated = len(changed_rows)
        store.clear_errors("ingest", [i.path for i, c in good if c is not None and i.path])
        store.record_errors("ingest", tag, report.errors)
        skipped = set(report.changed_not_updated)
        gold = [[i.key, i.label] for i, _ in good if i.label is not None and i.key not in skipped]
        if gold:
            before = _count_gold(store)
            upsert_gold(con, gold, GOLD_SOURCE)
            report.gold_added = _count_gold(store) - before
    return report


def _count_gold(store: Store) -> int:
    rows = store.con.execute("SELECT count(*) FROM gold").fetchall()
    return int(rows[0][0])


def _meta(item: Item) -> str | None:
    return json.dumps(item.metadata, default=str, sort_keys=True) if item.metadata else None
