"""``labelql demo`` (what ``make demo`` runs): the guide's policy on a *simulated* cats-and-dogs data set.

No pretrained CLIP exists on the machines LabelQL is built on, so the demo builds ``demo.duckdb`` from
:mod:`labelql.simulate` (18,699 rows whose vectors mimic CLIP's geometry), then runs
``rules/cats_dogs.lql`` end to end: embeddings, prompt and anchor scores, UMAP and t-SNE maps, named
clusters, routing, and the route and rule tables. Every output says the data is simulated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from labelql.diagnostics import LabelQLError

if TYPE_CHECKING:
    from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parents[2]
BANNER = (
    "SIMULATED DATA: 18,699 rows whose 512-d vectors mimic CLIP on the guide's cats-vs-dogs set "
    "(labelql.simulate). No real model, no real images."
)


def default_policy() -> Path:
    for cand in (Path("rules/cats_dogs.lql"), REPO_ROOT / "rules" / "cats_dogs.lql"):
        if cand.is_file():
            return cand
    raise LabelQLError(
        "rules/cats_dogs.lql not found", hint="run the demo from a LabelQL checkout, or pass --policy"
    )


def build_demo_store(db: Path, seed: int = 0, rows: int | None = None) -> None:
    """A fresh database with the simulated rows and their gold labels (vectors come with prepare)."""
    import shutil

    from labelql.simulate import N_ROWS
    from labelql.store import Store

    for path in (db, db.with_name(db.name + ".wal")):
        if path.exists():
            path.unlink()
    shutil.rmtree(db.parent / f"{db.stem}_cache", ignore_errors=True)
    Store.create(db).close()
    add_demo_rows(db, 0, rows or N_ROWS, seed)


def add_demo_rows(db: Path, start: int, stop: int, seed: int = 0) -> None:
    """Simulated rows ``start`` to ``stop - 1`` and their gold labels, as an ingest would add them."""
    from labelql.simulate import CatsDogs
    from labelql.store import Store, staged, upsert_gold

    sim = CatsDogs(seed)
    truths = [sim.truth(i) for i in range(start, stop)]
    with Store.open(db) as store, store.transaction() as con:
        meta = json.dumps({"simulated": True})
        with staged(con, "_demo_rows", ["key"], [[t.key] for t in truths]):
            con.execute(
                "INSERT INTO rows (key, kind, uri, text, added_at, source, metadata) "
                "SELECT key, 'simulated', NULL, NULL, now(), 'simulated demo', ?::JSON FROM _demo_rows",
                [meta],
            )
        upsert_gold(con, [[t.key, t.gold] for t in truths], "ingest")


def run_demo(db: Path, policy_path: Path | None, console: Console, rows: int | None = None) -> None:
    from labelql.checker import check_file
    from labelql.cli import print_run
    from labelql.engine import run_policy
    from labelql.store import Store

    t0 = time.perf_counter()
    policy_path = policy_path or default_policy()
    policy = check_file(policy_path)
    from labelql.simulate import N_ROWS

    console.print(f"[bold]LabelQL demo[/bold] — {BANNER}")
    console.print(f"building {db}: {rows or N_ROWS:,} simulated rows ...", markup=False)
    build_demo_store(db, rows=rows)
    console.print(
        f"running {policy_path}: embeddings, scores, UMAP and t-SNE maps, clusters, routing "
        "(the maps take most of the time) ...",
        markup=False,
    )
    with Store.open(db) as store:
        result = run_policy(store, policy)
    print_run(result, f"{policy_path} on the simulated data set (run {result.run_id})", console)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s. {BANNER}", markup=False)
    console.print(f"Try: labelql why cat_vs_dog_3 {policy_path} --db {db}", markup=False)
