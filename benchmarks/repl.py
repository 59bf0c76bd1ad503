"""REPL latency: p50 / p95 of 20 typical inputs at 100,000 and 1,000,000 rows, through ``Session.execute``.

Each store holds what a prepared policy leaves behind (rows, gold labels, eight stored scores, two
clusterings); no model runs, so the numbers are the REPL's own: checking the input with the policy,
compiling it, one DuckDB pass over the in-memory table, and measuring. The baseline, run in the same
process, is the bare aggregate DuckDB query a condition compiles to, on the same table: the floor.

    python benchmarks/repl.py [--rows 100000 1000000] [--repeat 5]

Goals (issue 6): p95 under 100 ms at 100,000 rows and under 1 s at 1,000,000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from engine import POLICY  # benchmarks/engine.py: the same 10-rule policy, on sys.path when run
from rich.console import Console
from rich.table import Table

from labelql.checker import check_text
from labelql.maps import full_params
from labelql.plan import build_plan
from labelql.session import TABLE, Session
from labelql.store import Store

QUERIES = [
    'text("photo of a cat") > 0.61',
    'text("photo of a dog") > 0.61 AND cluster(umap) = dogs',
    "cluster(umap) = cats AND cluster(tsne) = cats AND cat_hi",
    "near(b, 0.895) >= 2",
    "(cluster(umap) = dogs OR cluster(tsne) = dogs) AND NOT cat_lo",
    'similar(a) > 0.9 AND text("photo of a cat") > 0.5',
    'text("a puppy") > 0.7 OR text("a kitten") > 0.7',
    'text("photo of a dog") - text("photo of a cat") > 0.1',
    'cluster(umap) IN (cats, dogs) AND text("photo of a cat") BETWEEN 0.55 AND 0.65',
    "NOT (cluster(umap) = cats) AND similar(b) > 0.8",
    "cat_hi AND cluster(tsne) = cats",
    'dog IF text("photo of a dog") > 0.58 -> review',
    "cat IF similar(a) > 0.85 AND cluster(tsne) = cats -> done",
    'dog IF text("a puppy") > 0.6 AND cluster(umap) = dogs -> done',
    ':sweep text("photo of a dog") for dog',
    ":sweep similar(a)",
    ':suggest text("photo of a cat") precision>=0.99 for cat',
    ":rules",
    ":routes",
    ":sample 10",
]


def build_store(path: Path, n: int, seed: int = 0) -> None:
    """A store shaped like a prepared policy's: rows, gold, scores, maps and named clusters."""
    rng = np.random.default_rng(seed)
    policy = check_text(POLICY, "bench.lql")
    plan = build_plan(policy)
    keys = pa.array([f"k{i}" for i in range(n)])
    is_dog = rng.random(n) < 0.5
    with Store.create(path) as store:
        con = store.con
        con.register("_keys", pa.table({"key": keys, "dog": pa.array(is_dog)}))
        con.execute(
            "INSERT INTO rows (key, kind, added_at, source) "
            "SELECT key, 'simulated', now(), 'bench' FROM _keys"
        )
        con.execute(
            "INSERT INTO gold SELECT key, CASE WHEN dog THEN 'dog' ELSE 'cat' END, 'ingest', now() FROM _keys"
        )
        for c in plan.columns:
            if c.kind != "score":
                continue
            toward_dog = "dog" in c.source or "puppy" in c.source or '"k3"' in c.source
            sign = np.where(is_dog == toward_dog, 1.0, -1.0)
            if c.type == "int":
                values = np.clip(np.round(1 + sign * rng.random(n) * 1.5), 0, 2)
            else:
                values = 0.55 + 0.06 * sign + rng.normal(0, 0.04, n)
            con.register("_s", pa.table({"key": keys, "value": pa.array(values.astype(np.float32))}))
            con.execute("INSERT INTO scores SELECT ?, key, value FROM _s", [c.source])
            con.unregister("_s")
        for cs in policy.cluster_sets:
            proj = policy.projection(cs.projection)
            map_id = con.execute(
                "INSERT INTO maps (space, kind, params, fingerprint, fitted_rows, created_at) "
                "VALUES ('e', ?, ?::JSON, 'bench', ?, now()) RETURNING id",
                [proj.kind, json.dumps(full_params(proj), sort_keys=True), n],
            ).fetchall()[0][0]
            run_id = con.execute(
                "INSERT INTO cluster_runs (map_id, spec, summary, created_at) "
                "VALUES (?, '{}', '{\"clusters\": []}', now()) RETURNING id",
                [map_id],
            ).fetchall()[0][0]
            truth = np.where(is_dog, 1, 0)
            flip = rng.random(n) < 0.03
            cluster = np.where(rng.random(n) < 0.05, -1, np.where(flip, 1 - truth, truth))
            names = np.where(cluster == 1, "dogs", np.where(cluster == 0, "cats", None))
            con.register("_c", pa.table({"key": keys, "cluster": cluster, "name": pa.array(names.tolist())}))
            con.execute("INSERT INTO cluster_assign SELECT ?, key, cluster, name FROM _c", [run_id])
            con.unregister("_c")
        con.unregister("_keys")


def measure(n: int, repeat: int, console: Console) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        db, pol = Path(tmp) / "bench.duckdb", Path(tmp) / "bench.lql"
        pol.write_text(POLICY)
        t = time.perf_counter()
        build_store(db, n)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        session = Session(db, pol, prepare_first=False)
        load_s = time.perf_counter() - t
        per_query: dict[str, list[float]] = {q: [] for q in QUERIES}
        for _ in range(repeat):
            for q in QUERIES:
                a = session.execute(q)
                assert a.kind not in ("none",), q
                per_query[q].append(a.seconds)
        # The floor: the aggregate a plain condition compiles to, run directly.
        baseline = []
        plan = session._plan(session.policy)
        score = plan.by_source[next(k for k in plan.by_source if k[0] == "score" and "cat" in k[1])]
        umap = plan.by_source[("cluster", "umap")]
        sql = (
            f"SELECT gold, cur_route, count(*) FROM {TABLE} "
            f"WHERE {score} > 0.61 AND {umap} = 'cats' GROUP BY ALL"
        )
        for _ in range(repeat * 4):
            t = time.perf_counter()
            session.mem.execute(sql).fetchall()
            baseline.append(time.perf_counter() - t)
    every = [s for v in per_query.values() for s in v]
    conditions = [s for q, v in per_query.items() if not q.startswith(":") and " IF " not in q for s in v]
    return {
        "rows": n,
        "build_s": build_s,
        "load_s": load_s,
        "p50": statistics.median(every),
        "p95": float(np.percentile(every, 95)),
        "max": max(every),
        "cond_p50": statistics.median(conditions),
        "baseline": statistics.median(baseline),
        "per_query": {q: statistics.median(v) for q, v in per_query.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    console = Console(width=150)
    results = [measure(n, args.repeat, console) for n in args.rows]
    t = Table(title=f"REPL latency: {len(QUERIES)} typical inputs x {args.repeat} (Session.execute)")
    for col in (
        "rows",
        "load",
        "p50",
        "p95",
        "max",
        "conditions p50",
        "bare SQL",
        "conditions / bare",
        "goal p95",
    ):
        t.add_column(col, justify="right")
    for r in results:
        goal = 0.1 if r["rows"] <= 100_000 else 1.0  # type: ignore[operator]
        ok = "met" if r["p95"] < goal else "MISSED"  # type: ignore[operator]
        t.add_row(
            f"{r['rows']:,}",
            f"{r['load_s']:.2f} s",
            f"{1000 * r['p50']:.1f} ms",  # type: ignore[operator]
            f"{1000 * r['p95']:.1f} ms",  # type: ignore[operator]
            f"{1000 * r['max']:.1f} ms",  # type: ignore[operator]
            f"{1000 * r['cond_p50']:.1f} ms",  # type: ignore[operator]
            f"{1000 * r['baseline']:.1f} ms",  # type: ignore[operator]
            f"{r['cond_p50'] / r['baseline']:.1f}x",  # type: ignore[operator]
            f"< {1000 * goal:.0f} ms: {ok}",
        )
    console.print(t)
    q = Table(title="median per input (ms)")
    q.add_column("input")
    for r in results:
        q.add_column(f"{r['rows']:,} rows", justify="right")
    for query in QUERIES:
        q.add_row(query, *[f"{1000 * r['per_query'][query]:.1f}" for r in results])  # type: ignore[index]
    console.print(q)


if __name__ == "__main__":
    main()
