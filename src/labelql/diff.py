"""``labelql diff OLD NEW``: what a change to a labeling policy does to the labels, for review.

Each side's decisions are computed (a policy is run without being kept) or read (a stored run), then
compared row by row: transitions between (route, label) pairs, per-route coverage and accuracy before and
after (with gold), the rules added or removed, and example rows. ``render_markdown`` writes it in a form
to paste into a pull request.
"""

from __future__ import annotations

from typing import Any

from labelql.engine import GOLD_VIEW, route_table, run_policy
from labelql.policy import text_of
from labelql.store import Store
from labelql.versions import Side


def _decisions(store: Store, side: Side, table: str) -> None:
    if side.run_id is not None:
        store.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS "
            "SELECT key, label, route FROM run_rows WHERE run_id = ?",
            [side.run_id],
        )
        return
    assert side.policy is not None
    run_policy(store, side.policy, keep=False)
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT key, label, route FROM _assign")


def _rules(side: Side) -> list[str]:
    if side.policy is None:
        return []
    return [f"{r.label} IF {text_of(r.condition)} -> {r.route}" for r in side.policy.rules]


def diff(store: Store, old: Side, new: Side, show: int = 0) -> dict[str, Any]:
    """Compare the decisions of two sides on the rows both decided (see the module docstring)."""
    _decisions(store, old, "_diff_old")
    _decisions(store, new, "_diff_new")
    con = store.con
    both = f"FROM _diff_old o JOIN _diff_new n ON o.key = n.key LEFT JOIN ({GOLD_VIEW}) g ON g.key = o.key"
    total = con.execute(f"SELECT count(*) {both}").fetchall()[0][0]
    only = con.execute(
        "SELECT (SELECT count(*) FROM _diff_old WHERE key NOT IN (SELECT key FROM _diff_new)), "
        "(SELECT count(*) FROM _diff_new WHERE key NOT IN (SELECT key FROM _diff_old))"
    ).fetchall()[0]
    changed_sql = "(o.route <> n.route OR o.label IS DISTINCT FROM n.label)"
    transitions = [
        {
            "old_route": r[0],
            "old_label": r[1],
            "new_route": r[2],
            "new_label": r[3],
            "rows": r[4],
            "gold": r[5],
            "old_correct": r[6],
            "new_correct": r[7],
        }
        for r in con.execute(
            "SELECT o.route, o.label, n.route, n.label, count(*), count(g.gold), "
            "count_if(coalesce(o.label = g.gold, false)), count_if(coalesce(n.label = g.gold, false)) "
            f"{both} WHERE {changed_sql} GROUP BY ALL ORDER BY 5 DESC, 1, 2, 3, 4"
        ).fetchall()
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _diff_old_common AS SELECT o.* FROM _diff_old o "
        "WHERE key IN (SELECT key FROM _diff_new)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _diff_new_common AS SELECT n.* FROM _diff_new n "
        "WHERE key IN (SELECT key FROM _diff_old)"
    )
    before = route_table(store, "_diff_old_common")
    after = route_table(store, "_diff_new_common")
    routes = [
        {
            "route": b["route"],
            "rows_before": b["rows"],
            "rows_after": a["rows"],
            "share_before": b["share"],
            "share_after": a["share"],
            "accuracy_before": b["accuracy"],
            "accuracy_after": a["accuracy"],
            "ci95_before": b["ci95"],
            "ci95_after": a["ci95"],
            "gold_before": b["gold"],
            "gold_after": a["gold"],
        }
        for b, a in zip(before, after, strict=True)
    ]
    examples = []
    if show:
        examples = [
            {
                "key": r[0],
                "path": r[1],
                "old": f"{r[2] or '-'} {r[3]}",
                "new": f"{r[4] or '-'} {r[5]}",
                "gold": r[6],
            }
            for r in con.execute(
                "SELECT o.key, rw.uri, o.label, o.route, n.label, n.route, g.gold "
                f"{both} JOIN rows rw ON rw.key = o.key WHERE {changed_sql} "
                "ORDER BY hash(o.key), o.key LIMIT ?",
                [show],
            ).fetchall()
        ]
    old_rules, new_rules = _rules(old), _rules(new)
    return {
        "old": old.label,
        "new": new.label,
        "rows": total,
        "only_old": only[0],
        "only_new": only[1],
        "changed": sum(t["rows"] for t in transitions),
        "transitions": transitions,
        "routes": routes,
        "rules_removed": [r for r in old_rules if r not in new_rules],
        "rules_added": [r for r in new_rules if r not in old_rules],
        "examples": examples,
    }


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    return f"{100 * (b - a):+.2f} pt"


def _pair(route: str | None, label: str | None) -> str:
    return f"{route} ({label})" if label else f"{route}"


def render_markdown(d: dict[str, Any]) -> str:
    """The diff as GitHub-flavoured markdown, for a pull request's description."""
    out = [f"### Labeling policy diff: `{d['old']}` → `{d['new']}`", ""]
    share = d["changed"] / d["rows"] if d["rows"] else 0.0
    out.append(f"**{d['changed']:,} of {d['rows']:,} rows ({_pct(share, 2)}) change label or route.**")
    if d["only_old"] or d["only_new"]:
        out.append(
            f"Compared on the rows both sides decided ({d['only_old']:,} only in old, "
            f"{d['only_new']:,} only in new)."
        )
    out += ["", "| route | rows before | rows after | accuracy before | accuracy after | Δ accuracy |"]
    out.append("|---|---:|---:|---:|---:|---:|")
    for r in d["routes"]:
        out.append(
            f"| {r['route']} | {r['rows_before']:,} ({_pct(r['share_before'])}) | "
            f"{r['rows_after']:,} ({_pct(r['share_after'])}) | {_pct(r['accuracy_before'], 2)} | "
            f"{_pct(r['accuracy_after'], 2)} | {_delta(r['accuracy_before'], r['accuracy_after'])} |"
        )
    if d["transitions"]:
        out += [
            "",
            "| from | to | rows | gold: right before | gold: right after |",
            "|---|---|---:|---:|---:|",
        ]
        for t in d["transitions"]:
            out.append(
                f"| {_pair(t['old_route'], t['old_label'])} | {_pair(t['new_route'], t['new_label'])} | "
                f"{t['rows']:,} | {t['old_correct']:,} of {t['gold']:,} | "
                f"{t['new_correct']:,} of {t['gold']:,} |"
            )
    if d["rules_added"] or d["rules_removed"]:
        out += ["", "Rules:", "```diff"]
        out += [f"- {r}" for r in d["rules_removed"]] + [f"+ {r}" for r in d["rules_added"]]
        out.append("```")
    if d["examples"]:
        out += ["", "| key | path | before | after | gold |", "|---|---|---|---|---|"]
        for e in d["examples"]:
            out.append(f"| {e['key']} | {e['path'] or ''} | {e['old']} | {e['new']} | {e['gold'] or ''} |")
    out.append("")
    out.append(
        "_Accuracy is measured against gold labels (audit > import > ingest) on the rows that have one._"
    )
    return "\n".join(out) + "\n"
