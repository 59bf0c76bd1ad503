"""Ingestion speed: LabelQL's checker vs a plain single-threaded PIL loop, in one run.

The real photo sample (500 JPEGs) is repeated through symbolic links to about 20,000 files (the guide's
data set is 18,699 images). Files are read once before timing so both sides start with a warm page cache.
Prints one table; the goal is LabelQL >= 2x the plain loop for both the header check and the full decode.

    python benchmarks/ingest.py [--copies 40] [--sample DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from labelql.ingest import check_paths, ingest
from labelql.store import Store

REPO = Path(__file__).resolve().parents[1]


def plain_loop(paths: list[str], full: bool) -> float:
    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            if full:
                im.load()
            else:
                _ = im.size
    return time.perf_counter() - t


def same_work_loop(paths: list[str], full: bool) -> float:
    """A single-threaded loop doing what LabelQL's check does: the fair baseline for its parallelism."""
    from labelql.images import check_image

    t = time.perf_counter()
    for p in paths:
        check_image(p, "full" if full else "header")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--sample", type=Path, default=REPO.parent / "shared" / "data" / "catsdogs-sample")
    args = ap.parse_args()
    files = sorted(str(p) for p in args.sample.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no sample at {args.sample}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        for c in range(args.copies):
            d = root / f"copy{c:03d}"
            d.mkdir(parents=True)
            for f in files:
                os.symlink(f, d / Path(f).name)
        paths = sorted(str(p) for p in root.rglob("*.jpg"))
        for f in files:  # warm the page cache for everyone
            Path(f).read_bytes()
        n = len(paths)
        rows = []
        for mode in ("header", "full"):
            base = plain_loop(paths, full=mode == "full")
            same = same_work_loop(paths, full=mode == "full")
            t = time.perf_counter()
            checks = check_paths(paths, mode, 2 * 89_478_485)  # type: ignore[arg-type]
            ours = time.perf_counter() - t
            assert all(c.ok for c in checks)
            rows.append((mode, n / base, n / same, n / ours, base / ours, same / ours))
        with Store.create(Path(tmp) / "b.duckdb") as store:
            t = time.perf_counter()
            report = ingest(store, str(root))
            end_to_end = time.perf_counter() - t
            assert report.added == n and not report.errors
    table = Table(
        title=f"ingest: {n:,} JPEG files ({len(files)} real photos x {args.copies}), {os.cpu_count()} cores"
    )
    for col in (
        "check",
        "plain PIL loop",
        "same work, 1 thread",
        "LabelQL",
        "vs plain",
        "vs same work",
        "goal (vs plain)",
    ):
        table.add_column(col, justify="right")
    for mode, base_rate, same_rate, our_rate, ratio, ratio_same in rows:
        table.add_row(
            mode,
            f"{base_rate:,.0f}/s",
            f"{same_rate:,.0f}/s",
            f"{our_rate:,.0f}/s",
            f"{ratio:.2f}x",
            f"{ratio_same:.2f}x",
            ">= 2x",
        )
    table.add_row("ingest (check + DuckDB)", "", "", f"{n / end_to_end:,.0f}/s", "", "", "")
    Console(width=130).print(table)
    print(
        "The plain loop only parses headers (or decodes); LabelQL also reads and hashes every byte (sha256) "
        "and checks each file's end. 'same work' is that, single-threaded."
    )


if __name__ == "__main__":
    main()
