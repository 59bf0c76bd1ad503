"""Incremental apply vs full run: 1,000 new rows on a 100,000-row store (simulated cats and dogs).

- full run: ``run`` of rules/cats_dogs.lql on a store where nothing is computed yet (embeddings, scores,
  UMAP and t-SNE fits, clusters, routing, measuring, storing): what labeling the whole data set costs.
- warm run: ``run`` again with everything cached (routing and measuring all rows).
- apply: 1,000 rows ingested, then ``apply``: their embeddings, their scores, their places on the
  fitted maps (transform), their clusters, routing and storing them alone.

Goal (issue 7): apply <= 5% of a full run.

    python benchmarks/apply.py [--rows 100000] [--new 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from labelql.checker import check_file
from labelql.demo import REPO_ROOT, add_demo_rows, build_demo_store
from labelql.engine import apply_policy, run_policy
from labelql.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=1_000)
    args = ap.parse_args()
    console = Console(width=150)
    policy = check_file(REPO_ROOT / "rules" / "cats_dogs.lql")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        build_demo_store(db, rows=args.rows)
        with Store.open(db) as store:
            t = time.perf_counter()
            full = run_policy(store, policy)
            full_s = time.perf_counter() - t
            t = time.perf_counter()
            run_policy(store, policy)
            warm_s = time.perf_counter() - t
        add_demo_rows(db, args.rows, args.rows + args.new)
        with Store.open(db) as store:
            t = time.perf_counter()
            applied = apply_policy(store, policy)
            apply_s = time.perf_counter() - t
    assert applied.total == args.new, applied.total
    t = Table(title=f"apply {args.new:,} new rows on a {args.rows:,}-row store vs run (simulated data)")
    for col in ("", "seconds", "prepare", "route + measure + store", "vs full run", "goal"):
        t.add_column(col, justify="left" if not col else "right")

    def row(name: str, total: float, seconds: dict[str, float], goal: str = "") -> None:
        prep = seconds.get("prepare", 0.0)
        t.add_row(
            name, f"{total:.2f}", f"{prep:.2f}", f"{total - prep:.2f}", f"{100 * total / full_s:.1f}%", goal
        )

    row(f"full run ({args.rows:,} rows, nothing cached)", full_s, full.seconds)
    row(f"warm run ({args.rows:,} rows, all cached)", warm_s, {})
    ok = "met" if apply_s <= 0.05 * full_s else "MISSED"
    row(f"apply ({args.new:,} new rows)", apply_s, applied.seconds, f"<= 5%: {ok}")
    console.print(t)
    console.print(
        f"apply / warm run = {apply_s / warm_s:.2f}x. The full run's time is mostly the UMAP and t-SNE fits; "
        "apply places new rows among their nearest fitted rows on each map."
    )


if __name__ == "__main__":
    main()
