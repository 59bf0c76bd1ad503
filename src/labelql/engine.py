"""Apply a checked policy to a store: route every row, measure every rule, keep the run.

``run_policy`` prepares the signals (cache hits when nothing changed), gathers the plan's inputs into one
wide table, evaluates every let and rule on every row in one pass of DuckDB, routes the rows, and then
measures: the route table in the guide's shape, per rule and per let statistics with gold accuracy and
95% Wilson intervals, the label model's *estimated* accuracies where gold is missing, and counts per
label. The run (policy text and hash, model fingerprints, per-row assignments) is stored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlglot import exp

from labelql import policy as P
from labelql.compiler import decide_select, features_select, render, rule_lists
from labelql.diagnostics import LabelQLError
from labelql.plan import Plan, build_plan, let_column, rule_column
from labelql.store import Connected, Store, fetch_arrow

GOLD_PRIORITY = "CASE source WHEN 'audit' THEN 0 WHEN 'import' THEN 1 ELSE 2 END"
GOLD_VIEW = f"SELECT key, arg_min(label, {GOLD_PRIORITY}) AS gold FROM gold GROUP BY key"


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion (95% by default); None when n = 0."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17 there.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass
class RunResult:
    run_id: int
    total: int
    routes: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    lets: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    gold_rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "rows": self.total,
            "rows_with_gold": self.gold_rows,
            "routes": self.routes,
            "rules": self.rules,
            "lets": self.lets,
            "labels": self.labels,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "notices": self.notices,
        }


def latest_cluster_runs(store: Store, policy: P.CheckedPolicy) -> dict[str, int]:
    """The newest cluster run of each projection the policy clusters (by its map's key)."""
    from labelql.maps import full_params
    from labelql.signals import store_space_name

    out = {}
    for cset in policy.cluster_sets:
        proj = policy.projection(cset.projection)
        rows = store.con.execute(
            "SELECT r.id FROM cluster_runs r JOIN maps m ON r.map_id = m.id WHERE m.space = ? AND m.kind = ? "
            "AND m.params = ?::JSON ORDER BY r.id DESC LIMIT 1",
            [store_space_name(policy, proj.space), proj.kind, json.dumps(full_params(proj), sort_keys=True)],
        ).fetchall()
        if rows:
            out[cset.projection] = int(rows[0][0])
    return out


def materialize(
    store: Store, plan: Plan, table: str = "_features", scope: str | None = None
) -> dict[str, int]:
    runs = latest_cluster_runs(store, plan.policy)
    missing = [c.source for c in plan.columns if c.kind == "cluster" and c.source not in runs]
    if missing:
        raise LabelQLError(
            f"no clusters computed for {', '.join(missing)}", hint="run: labelql prepare POLICY"
        )
    sql = render(features_select(plan, runs, scope))
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}")
    return runs


def decide(store: Connected, plan: Plan, features: str = "_features", table: str = "_assign") -> None:
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {render(decide_select(plan, features))}")


def _count_if(cond: Any) -> Any:
    return exp.func("count_if", cond)


def rule_stats(
    store: Connected, plan: Plan, table: str = "_assign", gold_in_table: bool = False
) -> list[dict[str, Any]]:
    """Matched rows, coverage, overlaps, conflicts, decided rows and gold accuracy, per rule.

    ``gold_in_table``: the table carries a ``gold`` column already (the REPL's does), so no join.
    """
    rules = plan.policy.rules
    if not rules:
        return []
    gold = exp.column("gold", "a") if gold_in_table else exp.column("gold", "g")
    parts: list[Any] = [exp.func("count", exp.Star())]
    for r in rules:
        col = exp.column(rule_column(r.index), "a")
        parts += [
            _count_if(col),
            _count_if(
                exp.and_(col, exp.GT(this=exp.column("n_matched", "a"), expression=exp.Literal.number(1)))
            ),
            # It decided the row when the row went to its route (one label there, so its label).
            _count_if(
                exp.and_(col, exp.EQ(this=exp.column("route", "a"), expression=exp.Literal.string(r.route)))
            ),
            _count_if(
                exp.and_(
                    col,
                    exp.Like(
                        this=exp.column("reason", "a"),
                        expression=exp.Literal.string(f"conflict at {r.route}%"),
                    ),
                )
            ),
            _count_if(exp.and_(col, exp.Not(this=exp.Is(this=gold, expression=exp.Null())))),
            _count_if(exp.and_(col, exp.EQ(this=gold, expression=exp.Literal.string(r.label)))),
        ]
    # One select of every aggregate: adding them one by one would copy the growing tree each time.
    q = exp.Select(expressions=parts).from_(exp.to_table(table).as_("a"), copy=False)
    if not gold_in_table:
        q = q.join(
            exp.Subquery(
                this=exp.maybe_parse(GOLD_VIEW, dialect="duckdb"),
                alias=exp.TableAlias(this=exp.to_identifier("g")),
            ),
            on=exp.EQ(this=exp.column("key", "a"), expression=exp.column("key", "g")),
            join_type="left",
            copy=False,
        )
    # count_if over no rows is NULL in DuckDB: an apply with nothing new measures zeros.
    row = [v or 0 for v in store.con.execute(render(q)).fetchall()[0]]
    total = row[0]
    out = []
    for i, r in enumerate(rules):
        matched, overlaps, decided, conflicts, n_gold, correct = row[1 + 6 * i : 7 + 6 * i]
        ci = wilson(correct, n_gold)
        out.append(
            {
                "rule": r.name,
                "label": r.label,
                "route": r.route,
                "matched": matched,
                "coverage": matched / total if total else 0.0,
                "overlaps": overlaps,
                "conflicts": conflicts,
                "decided": decided,
                "gold": n_gold,
                "correct": correct,
                "accuracy": correct / n_gold if n_gold else None,
                "ci95": list(ci) if ci else None,
            }
        )
    return out


def let_stats(store: Connected, plan: Plan, table: str = "_assign") -> list[dict[str, Any]]:
    """Per boolean let: matched rows, coverage, and the gold label mix of what it matches."""
    out: list[dict[str, Any]] = []
    total = store.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    for i, x in enumerate(plan.policy.lets):
        if x.expr.type != P.BOOL:
            out.append({"let": x.name, "type": x.expr.type, "matched": None})
            continue
        col = let_column(i)
        matched = store.con.execute(f"SELECT count_if({col}) FROM {table}").fetchall()[0][0] or 0
        mix = store.con.execute(
            f"SELECT g.gold, count(*) FROM {table} a JOIN ({GOLD_VIEW}) g ON a.key = g.key WHERE a.{col} "
            "GROUP BY g.gold ORDER BY 2 DESC"
        ).fetchall()
        out.append(
            {
                "let": x.name,
                "type": P.BOOL,
                "matched": matched,
                "coverage": matched / total if total else 0.0,
                "gold_mix": {k: v for k, v in mix},
            }
        )
    return out


def route_table(
    store: Connected, table: str = "_assign", gold_in_table: bool = False
) -> list[dict[str, Any]]:
    """The guide's table: rows classified, errors against gold, accuracy, cumulative coverage."""
    gold = "a.gold" if gold_in_table else "g.gold"
    source = f"{table} a" if gold_in_table else f"{table} a LEFT JOIN ({GOLD_VIEW}) g ON a.key = g.key"
    rows = dict(
        (r[0], r[1:])
        for r in store.con.execute(
            f"SELECT a.route, count(*), count({gold}), count_if(a.label IS NOT NULL AND {gold} IS NOT NULL "
            f"AND a.label <> {gold}) FROM {source} GROUP BY a.route"
        ).fetchall()
    )
    total = sum(v[0] for v in rows.values())
    out, cumulative = [], 0
    for route in ("done", "review", "manual"):
        n, n_gold, errors = rows.get(route, (0, 0, 0))
        cumulative += n
        measured = route != "manual" and n_gold > 0
        ci = wilson(n_gold - errors, n_gold) if measured else None
        out.append(
            {
                "route": route,
                "rows": n,
                "share": n / total if total else 0.0,
                "gold": n_gold,
                "errors": errors if route != "manual" else None,
                "accuracy": (n_gold - errors) / n_gold if measured else None,
                "ci95": list(ci) if ci else None,
                "cumulative_coverage": cumulative / total if total else 0.0,
            }
        )
    return out


def label_counts(store: Connected, table: str = "_assign") -> list[dict[str, Any]]:
    rows = store.con.execute(
        f"SELECT label, route, count(*) FROM {table} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    per: dict[str, dict[str, int]] = {}
    for label, route, n in rows:
        per.setdefault(label or "(none)", {"done": 0, "review": 0, "manual": 0})[route] = n
    return [{"label": k, **v} for k, v in per.items()]


def estimate(
    store: Connected,
    plan: Plan,
    rules: list[dict[str, Any]],
    routes: list[dict[str, Any]],
    table: str = "_assign",
) -> None:
    """Add the label model's estimated accuracies (modelled, not measured) to the rule and route rows."""
    from labelql.labelmodel import fit

    pol = plan.policy
    if not pol.rules:
        return
    labels = tuple(pol.labels)
    cols = ", ".join(rule_column(r.index) for r in pol.rules)
    # Label and route as small integers from DuckDB: a Python loop over a million strings costs more
    # than the model's whole fit.
    arrow = fetch_arrow(
        store.con,
        f"SELECT {cols}, coalesce(list_position(?::VARCHAR[], label), 0) - 1 AS label_idx, "
        f"list_position(['done', 'review', 'manual'], route) - 1 AS route_idx FROM {table}",
        [list(labels)],
    )
    votes = np.column_stack(
        [arrow.column(rule_column(r.index)).to_numpy(zero_copy_only=False).astype(bool) for r in pol.rules]
    )
    model = fit(votes, [labels.index(r.label) for r in pol.rules], labels)
    acc = model.rule_accuracy()
    for r, est in zip(rules, acc, strict=True):
        r["estimated_accuracy"] = float(est) if r["matched"] else None
    post = model.posterior(votes)
    idx = arrow.column("label_idx").to_numpy(zero_copy_only=False).astype(np.int64)
    route_idx = arrow.column("route_idx").to_numpy(zero_copy_only=False)
    p_assigned = np.where(idx >= 0, post[np.arange(len(idx)), np.maximum(idx, 0)], np.nan)
    for r in routes:
        m = (route_idx == ("done", "review", "manual").index(r["route"])) & ~np.isnan(p_assigned)
        r["estimated_accuracy"] = float(p_assigned[m].mean()) if r["route"] != "manual" and m.any() else None


def run_policy(
    store: Store,
    policy: P.CheckedPolicy,
    *,
    prepare_first: bool = True,
    keep: bool = True,
    options: Any = None,
    scope: str | None = None,
    kind: str = "run",
) -> RunResult:
    """Prepare, route, measure and (with ``keep``) store a run; see the module docstring.

    ``scope`` names a table of keys: only those rows are routed, measured and stored (``apply``).
    """
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    notices: list[str] = []
    if prepare_first:
        from labelql.prepare import prepare

        report = prepare(store, policy, options)
        for e in report.embeddings:
            notices.extend(e.notices)
    seconds["prepare"] = time.perf_counter() - t0
    plan = build_plan(policy)
    t = time.perf_counter()
    materialize(store, plan, scope=scope)
    decide(store, plan)
    seconds["route"] = time.perf_counter() - t
    t = time.perf_counter()
    total = store.con.execute("SELECT count(*) FROM _assign").fetchall()[0][0]
    gold_rows = store.con.execute(
        f"SELECT count(*) FROM _assign a JOIN ({GOLD_VIEW}) g ON a.key = g.key"
    ).fetchall()[0][0]
    routes = route_table(store)
    rules = rule_stats(store, plan)
    lets = let_stats(store, plan)
    labels = label_counts(store)
    seconds["measure"] = time.perf_counter() - t
    t = time.perf_counter()
    if total:
        estimate(store, plan, rules, routes)
    seconds["label_model"] = time.perf_counter() - t
    run_id = store_run(store, plan, routes, rules, lets, labels, kind=kind) if keep and total else 0
    seconds["total"] = time.perf_counter() - t0
    return RunResult(run_id, total, routes, rules, lets, labels, gold_rows, seconds, notices)


def store_run(
    store: Store,
    plan: Plan,
    routes: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    lets: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    *,
    table: str = "_assign",
    kind: str = "run",
) -> int:
    """Keep a run: the policy (text, hash, git commit, model fingerprints), its summary, every routed
    row's decision, and those decisions as the rows' labels of record (``applied``)."""
    from labelql.versions import git_commit

    policy = plan.policy
    text = policy.sources.texts.get(policy.path, "") if policy.sources else ""
    fingerprints = {s.name: s.fingerprint for s in store.spaces()}
    summary = json.dumps({"routes": routes, "rules": rules, "lets": lets, "labels": labels}, default=str)
    commit = git_commit(policy.path, text)
    with store.transaction() as con:
        run_id = con.execute(
            "INSERT INTO runs (policy_path, policy_text, policy_hash, fingerprints, summary, created_at, "
            "kind, git_commit, rows_routed) VALUES (?, ?, ?, ?::JSON, ?::JSON, now(), ?, ?, "
            f"(SELECT count(*) FROM {table})) RETURNING id",
            [policy.path, text, policy.source_hash, json.dumps(fingerprints), summary, kind, commit],
        ).fetchall()[0][0]
        matched, deciding = rule_lists(plan)
        con.execute(
            f"INSERT INTO run_rows SELECT ?, key, label, route, {render(deciding)}, {render(matched)}, "
            f"reason FROM {table}",
            [run_id],
        )
        con.execute(f"DELETE FROM applied WHERE key IN (SELECT key FROM {table})")
        con.execute(f"INSERT INTO applied SELECT key, label, route, ?, now() FROM {table}", [run_id])
    return int(run_id)


def apply_policy(
    store: Store, policy: P.CheckedPolicy, *, relabel: bool = False, options: Any = None
) -> RunResult:
    """The incremental run: route the rows that have no label of record yet (every row with
    ``relabel``) and keep them as an ``apply`` run. Preparing first computes only what those rows lack:
    their vectors, their scores, their places on the fitted maps (transform) and their clusters.
    Rows decided before keep their labels; gold (human) labels are never touched."""
    where = "" if relabel else "WHERE NOT EXISTS (SELECT 1 FROM applied a WHERE a.key = r.key)"
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE _scope AS SELECT key FROM rows r {where}")
    return run_policy(store, policy, options=options, scope="_scope", kind="apply")


def slice_rows(store: Store, policy: P.CheckedPolicy, name: str) -> Any:
    """The rows a slice selects now (an Arrow table): key, path, ingest time, and the inputs its
    condition reads, named as written (``text("photo of a cat")``)."""
    from labelql.compiler import slice_select
    from labelql.prepare import prepare

    prepare(store, policy)
    plan = build_plan(policy)
    materialize(store, plan)
    sl = next(s for s in policy.slices if s.name == name)
    shown = plan.inputs_read(sl.condition)
    keys = render(slice_select(plan, "_features", name))
    cols = "".join(f", f.{c} AS {c}" for c in shown)
    table = fetch_arrow(
        store.con,
        f"SELECT f.key, r.uri AS path, r.added_at AS added{cols} "
        "FROM _features f JOIN rows r ON r.key = f.key "
        f"WHERE f.key IN ({keys}) ORDER BY f.key",
    )
    return table.rename_columns(["key", "path", "added", *shown.values()])
