"""``labelql test``: evaluate a policy's expectations against a run's measurements and decisions."""

from __future__ import annotations

import operator
from typing import Any

from labelql import policy as P
from labelql.engine import RunResult
from labelql.store import Store

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "=": operator.eq}
_OPS |= {"!=": operator.ne, "<>": operator.ne}


def _metric(result: RunResult, e: P.Expectation) -> tuple[float | None, str]:
    """The measured value, and how it reads (None when it cannot be measured, with the reason)."""
    route = next((r for r in result.routes if r["route"] == e.target), None)
    if route is not None:
        if e.metric == "coverage":
            return route["share"], f"{100 * route['share']:.2f}% ({route['rows']:,} rows)"
        if e.metric == "rows":
            return float(route["rows"]), f"{route['rows']:,}"
        if e.metric == "errors":
            if not route["gold"]:
                return None, f"no gold rows in {e.target}: errors cannot be counted"
            return float(route["errors"]), f"{route['errors']:,} of {route['gold']:,}"
        if route["accuracy"] is None:
            return None, f"no gold rows in {e.target}: accuracy cannot be measured"
        lo, hi = route["ci95"]
        return route[
            "accuracy"
        ], f"{100 * route['accuracy']:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}] on {route['gold']:,}"
    rule = next(r for r in result.rules if r["rule"] == e.target)
    if e.metric == "coverage":
        return rule["coverage"], f"{100 * rule['coverage']:.2f}% ({rule['matched']:,} rows)"
    if e.metric == "rows":
        return float(rule["matched"]), f"{rule['matched']:,}"
    if rule["accuracy"] is None:
        return None, f"no gold rows among rule {e.target}'s matches"
    if e.metric == "errors":
        return float(
            rule["gold"] - rule["correct"]
        ), f"{rule['gold'] - rule['correct']:,} of {rule['gold']:,}"
    return rule["accuracy"], f"{100 * rule['accuracy']:.2f}% on {rule['gold']:,}"


def evaluate(store: Store, result: RunResult, expectations: list[P.Expectation]) -> list[dict[str, Any]]:
    """One outcome per expectation: passed, the actual value as text, and where it was written."""
    out = []
    for e in expectations:
        where = str(e.span)
        if e.key is not None:
            rows = store.con.execute("SELECT label, route FROM _assign WHERE key = ?", [e.key]).fetchall()
            if not rows:
                out.append(
                    {"text": e.text, "passed": False, "actual": f"no row with key {e.key!r}", "at": where}
                )
                continue
            label, route = rows[0]
            ok = (e.label is None or e.label == label) and (e.route is None or e.route == route)
            out.append({"text": e.text, "passed": ok, "actual": f"{label or '-'} {route}", "at": where})
            continue
        value, shown = _metric(result, e)
        assert e.op is not None and e.value is not None
        ok = value is not None and bool(_OPS[e.op](value, e.value))
        out.append({"text": e.text, "passed": ok, "actual": shown, "at": where})
    return out
