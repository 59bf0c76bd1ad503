"""``labelql why KEY POLICY``: every let and rule on one row, each condition's value, and the decision.

The row is evaluated with the numpy evaluator (:mod:`labelql.evaluate`), the same independent check that
the tests hold the SQL engine to, so what ``why`` shows is what the engine decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlglot import exp

from labelql import policy as P
from labelql.compiler import features_select, render
from labelql.diagnostics import LabelQLError, did_you_mean
from labelql.engine import latest_cluster_runs
from labelql.evaluate import Evaluator, V, route
from labelql.plan import Plan, build_plan
from labelql.policy import text_of
from labelql.store import Store


def _show(v: V) -> Any:
    if not v.valid[0]:
        return None
    x = v.data[0]
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.floating | float):
        return round(float(x), 4)
    return str(x)


def _atoms(ev: Evaluator, e: P.TExpr) -> list[str]:
    """One line per comparison: its left side's value, the test, and whether it holds."""
    if isinstance(e, P.AllOf | P.AnyOf):
        return [line for o in e.operands for line in _atoms(ev, o)]
    if isinstance(e, P.Negate):
        return _atoms(ev, e.operand)
    result = _show(ev(e))
    mark = "✓" if result is True else "✗" if result is False else "null"
    if isinstance(e, P.Cmp | P.Range | P.Member):
        operand = e.left if isinstance(e, P.Cmp) else e.operand
        value = _show(ev(operand))
        test = text_of(e)[len(text_of(operand)) :].strip()
        if value is None:
            return [f"{text_of(operand)} is null, so '{test}' is null: no match"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        return [f"{text_of(operand)} = {shown} {test} {mark}"]
    return [f"{text_of(e)} {mark}"]


def explain_row(store: Store, policy: P.CheckedPolicy, key: str) -> dict[str, Any]:
    plan = build_plan(policy)
    if not store.con.execute("SELECT 1 FROM rows WHERE key = ?", [key]).fetchall():
        near = [
            k
            for (k,) in store.con.execute(
                "SELECT key FROM rows WHERE key ILIKE ? LIMIT 200", ["%" + key[-6:] + "%"]
            ).fetchall()
        ]
        raise LabelQLError(f"no row with key {key!r}", hint=did_you_mean(key, near))
    runs = latest_cluster_runs(store, policy)
    q = features_select(plan, runs).where(
        exp.EQ(this=exp.column("key", "r"), expression=exp.Literal.string(key))
    )
    cur = store.con.execute(render(q))
    names = [d[0] for d in cur.description]
    row = dict(zip(names, cur.fetchall()[0], strict=True))
    ev = Evaluator(plan, _columns(plan, row), 1)
    lets = [{"name": x.name, "value": _show(ev(x.expr)), "atoms": _atoms(ev, x.expr)} for x in policy.lets]
    matched = {r.index: ev.matches(r.condition) for r in policy.rules}
    rules = [
        {
            "name": r.name,
            "label": r.label,
            "route": r.route,
            "value": bool(matched[r.index][0]),
            "atoms": _atoms(ev, r.condition),
        }
        for r in policy.rules
    ]
    label, rt = route(plan, matched, 1)[0]
    hits = [r for r in policy.rules if matched[r.index][0]]
    reason = None
    if not hits:
        reason = "no rule matched"
    elif rt == "manual":
        top = "done" if any(r.route == "done" for r in hits) else "review"
        reason = f"conflict at {top}: " + " vs ".join(sorted({r.label for r in hits if r.route == top}))
    return {
        "key": key,
        "label": label,
        "route": rt,
        "reason": reason,
        "lets": lets,
        "rules": rules,
        "inputs": {c.name: row[c.name] for c in plan.columns},
    }


def _columns(plan: Plan, row: dict[str, Any]) -> dict[str, V]:
    out = {}
    for c in plan.columns:
        v = row[c.name]
        valid = np.asarray([v is not None])
        if c.kind == "added":
            data = np.asarray([np.datetime64(v, "us") if v is not None else np.datetime64("NaT")])
        elif c.type in (P.FLOAT, P.INT):
            data = np.asarray([float(v) if v is not None else np.nan])
        else:
            data = np.asarray([v], dtype=object)
        out[c.name] = V(data, valid)
    return out
