"""The REPL's engine: a policy being written, evaluated live against an in-memory copy of its inputs.

A :class:`Session` holds the policy's text as it grows (the loaded file, plus statements typed and
kept, minus rules dropped) and one in-memory DuckDB table, ``_repl``, with a row per data row: every
input column the session has needed so far (scores, cluster names, metadata, ingest time), the gold
label, and the current policy's decision (``cur_label``, ``cur_route``, ``cur_reason``).

Everything typed is checked *together with* the session's policy, exactly as ``labelql check`` would
check the file, so names resolve and errors carry carets; positions in the typed text are mapped back
onto ``<repl>``. A bare condition is checked as the slice ``_repl_query``; a rule is checked as a rule
appended to the policy; its what-if is one pass of the compiler's routing SQL over ``_repl`` that
carries the current decision along.

The database file is not held between queries: inputs are copied into memory, and the file is opened
only to compute what a new prompt, anchor set or clusters statement needs, or to pick up new data
(noticed from the file's size and time, then from its contents). Another process may ingest, run or
apply meanwhile; the next answer uses its data.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from labelql import policy as P
from labelql.checker import check_file
from labelql.compiler import SqlExpr, decide_select, features_select, render
from labelql.diagnostics import Diagnostic, DiagnosticError, LabelQLError, SourceMap, Span, did_you_mean
from labelql.engine import (
    GOLD_VIEW,
    estimate,
    latest_cluster_runs,
    route_table,
    rule_stats,
    wilson,
)
from labelql.parser import read_source, tokenize
from labelql.plan import Column, Plan, build_plan, rule_column
from labelql.policy import text_of
from labelql.prepare import PrepareOptions, prepare
from labelql.store import Store, StoreError, fetch_arrow

REPL_FILE = "<repl>"
QUERY = "_repl_query"
SWEEP = "_repl_sweep"
PREFIX = f"slice {QUERY} = "
CONT = "    "
TABLE = "_repl"
ASSIGN = "_repl_assign"
STATEMENT_KINDS = ("LABELS", "EMBEDDING", "PROJECTION", "CLUSTERS", "ANCHORS", "LET", "SLICE", "IMPORT")
_CONTINUES = {
    "AND",
    "OR",
    "NOT",
    "IF",
    "BETWEEN",
    "IN",
    "COMMA",
    "EQ",
    "COMP_OP",
    "ADD_OP",
    "MUL_OP",
    "ARROW",
}
_CONTINUES |= {"LPAR", "COLON", "LABELS", "EMBEDDING", "PROJECTION", "ANCHORS", "LET", "SLICE", "RULE"}


@dataclass
class Answer:
    """What one input produced: ``kind`` says how to show ``data`` (see :mod:`labelql.repl`)."""

    kind: str
    data: dict[str, Any]
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)


@dataclass
class _Query:
    """The last thing evaluated (a condition, a rule's condition, a let or a slice): ``:sample`` reads it."""

    text: str
    condition: P.TExpr
    policy: P.CheckedPolicy


def split_inputs(text: str) -> list[str]:
    """Cut script or pasted text into inputs: a ``:command`` line is one input; otherwise lines follow
    the policy layout (a line indented deeper than an input's first line continues it, and so does the
    line after one that ends mid-condition); blank lines and ``#`` comment lines are skipped."""
    out: list[str] = []
    current: list[str] = []
    indent = 0
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):  # comments mean nothing, even mid-input
            continue
        depth = len(line) - len(stripped)
        if current and (depth > indent or incomplete("\n".join(current))) and not stripped.startswith(":"):
            current.append(line)
            continue
        if current:
            out.append("\n".join(current))
        current, indent = [line], depth
        if stripped.startswith(":"):
            out.append(stripped)
            current = []
    if current:
        out.append("\n".join(current))
    return out


def incomplete(text: str) -> bool:
    """Whether typed text clearly goes on: open parentheses, or a last token that needs a right side."""
    if text.lstrip().startswith(":"):
        return False
    toks = [t for t in tokenize(text, REPL_FILE)[0] if t.type not in ("NL", "COMMENT")]
    if not toks:
        return False
    depth = sum(1 if t.type == "LPAR" else -1 if t.type == "RPAR" else 0 for t in toks)
    return depth > 0 or toks[-1].type in _CONTINUES


def classify(text: str) -> str:
    """``command``, ``rule``, ``statement`` or ``condition``, from the first tokens."""
    if text.lstrip().startswith(":"):
        return "command"
    toks = [t for t in tokenize(text, REPL_FILE)[0] if t.type not in ("NL", "COMMENT")]
    if not toks:
        return "empty"
    if toks[0].type == "RULE" or (len(toks) > 1 and toks[0].type == "NAME" and toks[1].type == "IF"):
        return "rule"
    if toks[0].type in STATEMENT_KINDS:
        return "statement"
    return "condition"


class Session:
    """A policy under construction and the data it is tried on (see the module docstring)."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        policy: str | os.PathLike[str] | None = None,
        *,
        prepare_first: bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """Load ``policy`` (or start empty) and the data of ``db``; ``progress`` sees the embedding and
        mapping steps when the policy's signals are not computed yet."""
        self.db = Path(db)
        self.path = Path(policy) if policy is not None else None
        self.file = str(self.path) if self.path else "session.lql"
        self.original = read_source(self.path) if self.path else ""
        self.text = self.original
        self.policy = self._check(self.text)
        self.options = PrepareOptions()
        self.encoders: dict[str, Any] = {}
        self.mem = duckdb.connect()
        self.cols: dict[tuple[str, str], Column] = {}
        self.cluster_runs: dict[str, int] = {}
        self.total = 0
        self.gold_rows = 0
        self.meta_fields: list[str] = []
        self.pending_text: str | None = None  # the last rule typed: what :add keeps
        self.last: _Query | None = None
        self._stat: tuple[int, ...] | None = None
        self._content: tuple[Any, ...] | None = None
        self._assign_for: str | None = None
        self._prepare_first = prepare_first
        self.progress = progress
        self.refresh(force=True)

    # -- the database ----------------------------------------------------------------------------
    @contextmanager
    def _store(self, read_only: bool = False) -> Iterator[Store]:
        store = Store.open(self.db, read_only=read_only)
        try:
            yield store
        finally:
            store.close()
            if not read_only:
                self._stat = _file_stat(self.db)

    def refresh(self, force: bool = False) -> list[str]:
        """Reload the inputs when the database changed (or with ``force``); returns notices."""
        stat = _file_stat(self.db)
        if not force and stat == self._stat:
            return []
        notices: list[str] = []
        with self._store() as store:
            content = _content(store)
            if not force and content == self._content:
                return []
            before = self.total
            if self._prepare_first:
                prepare(store, self.policy, self.options, encoders=self.encoders, progress=self.progress)
            self._load(store)
            self._content = _content(store)
        if not force:
            notices.append(f"the database changed: {self.total:,} rows ({self.total - before:+,}); reloaded")
        self._decide()
        return notices

    def _load(self, store: Store) -> None:
        """Copy every input column the session uses (the policy's, and those queries added) into memory."""
        for key, col in _plan_columns(self.policy).items():
            self.cols.setdefault(key, col)
        self._renumber()
        self.cluster_runs = latest_cluster_runs(store, self.policy)
        plan = self._plan(self.policy)
        q = features_select(plan, self.cluster_runs)
        sql = f"SELECT f.*, g.gold FROM ({render(q)}) f LEFT JOIN ({GOLD_VIEW}) g ON f.key = g.key"
        arrow = fetch_arrow(store.con, sql)
        self.mem.register("_in", arrow)
        try:
            self.mem.execute(f"CREATE OR REPLACE TABLE {TABLE} AS SELECT * FROM _in")
        finally:
            self.mem.unregister("_in")
        self.total = arrow.num_rows
        self.meta_fields = sorted(
            r[0]
            for r in store.con.execute(
                "SELECT DISTINCT unnest(json_keys(metadata)) FROM "
                "(SELECT metadata FROM rows WHERE metadata IS NOT NULL LIMIT 1000)"
            ).fetchall()
        )
        self.gold_rows = self.mem.execute(f"SELECT count(gold) FROM {TABLE}").fetchall()[0][0]
        self._assign_for = None

    def _renumber(self) -> None:
        """Session column names: stable for the session, generated (never user text)."""
        n = 0
        for key, col in list(self.cols.items()):
            if col.kind in ("added", "unlabeled"):
                continue
            if not col.name.startswith("f"):
                self.cols[key] = replace(col, name=f"f{n}")
            n = max(n, int(self.cols[key].name[1:]) + 1)

    def _ensure(self, policy: P.CheckedPolicy, extra: tuple[tuple[str, str], ...] = ()) -> Plan:
        """The plan of ``policy`` over ``_repl``, adding the input columns it needs first."""
        wanted = _plan_columns(policy)
        for key in extra:
            wanted.setdefault(key, Column(key[1], key[0], key[1], P.CLUSTER))
        clusters_changed = any(
            cs.projection not in self.cluster_runs
            for cs in policy.cluster_sets
            if ("cluster", cs.projection) in wanted
        )
        missing = [k for k in wanted if k not in self.cols]
        if missing or clusters_changed:
            with self._store() as store:
                prepare(store, policy, self.options, encoders=self.encoders)
                runs = latest_cluster_runs(store, policy)
                stale = [
                    k for k in wanted if k[0] == "cluster" and runs.get(k[1]) != self.cluster_runs.get(k[1])
                ]
                for k in missing:
                    self.cols[k] = wanted[k]
                self._renumber()
                self.cluster_runs.update(runs)
                fresh = list(dict.fromkeys([*missing, *stale]))
                if fresh:
                    self._add_columns(store, fresh)
                self._content = _content(store)
        return self._plan(policy)

    def _add_columns(self, store: Store, keys: list[tuple[str, str]]) -> None:
        cols = tuple(self.cols[k] for k in keys)
        plan = Plan(self.policy, cols, {k: self.cols[k].name for k in keys})
        arrow = fetch_arrow(store.con, render(features_select(plan, self.cluster_runs)))
        names = [c.name for c in cols]
        existing = {r[0] for r in self.mem.execute(f"DESCRIBE {TABLE}").fetchall()}
        drop = [n for n in names if n in existing]
        self.mem.register("_in", arrow)
        try:
            keep = f"t.* EXCLUDE ({', '.join(drop)})" if drop else "t.*"
            self.mem.execute(
                f"CREATE OR REPLACE TABLE {TABLE} AS SELECT {keep}, {', '.join('n.' + n for n in names)} "
                f"FROM {TABLE} t LEFT JOIN _in n ON t.key = n.key"
            )
        finally:
            self.mem.unregister("_in")

    def _plan(self, policy: P.CheckedPolicy) -> Plan:
        return Plan(policy, tuple(self.cols.values()), {k: c.name for k, c in self.cols.items()})

    def _feature_names(self) -> list[str]:
        return [c.name for c in self.cols.values()]

    def _decide(self) -> None:
        """Store the current policy's decision in ``cur_label``, ``cur_route`` and ``cur_reason``."""
        plan = self._ensure(self.policy)
        carry = ("gold", *self._feature_names())
        sql = render(decide_select(plan, TABLE, carry))
        self.mem.execute(
            f"CREATE OR REPLACE TABLE {TABLE} AS SELECT key, {', '.join(carry)}, label AS cur_label, "
            f"route AS cur_route, reason AS cur_reason FROM ({sql})"
        )
        self._assign_for = None

    def _assign(self) -> Plan:
        """``_repl_assign``: the current decision in the engine's shape, for its measuring functions."""
        plan = self._ensure(self.policy)
        if self._assign_for != self.text:
            sql = render(decide_select(plan, TABLE, ("gold",)))
            self.mem.execute(f"CREATE OR REPLACE TABLE {ASSIGN} AS {sql}")
            self._assign_for = self.text
        return plan

    # -- checking typed text ---------------------------------------------------------------------
    def _check(self, text: str) -> P.CheckedPolicy:
        return check_file(self.file, text)

    def _check_with(self, typed: str, prefix: str = "") -> P.CheckedPolicy:
        """Check the session's policy with ``typed`` appended; errors in it point at ``<repl>``."""
        base = self._base()
        try:
            return check_file(self.file, base + _body(typed, prefix))
        except DiagnosticError as e:
            raise _remap(e, self.file, base.count("\n"), len(prefix), typed) from None

    def _base(self) -> str:
        return self.text.rstrip("\n") + "\n" if self.text.strip() else ""

    # -- inputs ----------------------------------------------------------------------------------
    def execute(self, text: str) -> Answer:
        """Evaluate one input (a condition, a rule, a statement or a ``:command``)."""
        t0 = time.perf_counter()
        try:
            notices = self.refresh()
        except StoreError as e:  # another process is writing: answer from the copy already loaded
            notices = [f"{e.message}; this answer uses the data loaded before"]
        kind = classify(text)
        if kind == "empty":
            answer = Answer("none", {})
        elif kind == "command":
            answer = self._command(text.strip())
        elif kind == "rule":
            answer = self.what_if(text)
        elif kind == "statement":
            answer = self.statement(text)
        else:
            answer = self.condition(text)
        answer.notices = notices + answer.notices
        answer.seconds = time.perf_counter() - t0
        return answer

    def condition(self, text: str) -> Answer:
        """Matched rows, coverage, gold label mix and majority accuracy (or the label model's estimate)."""
        pol = self._check_with(text, PREFIX)
        cond = next(s.condition for s in pol.slices if s.name == QUERY)
        self.last = _Query(text.strip(), cond, pol)
        return Answer("condition", self._measure(pol, cond, text.strip()))

    def _measure(self, pol: P.CheckedPolicy, cond: P.TExpr, text: str) -> dict[str, Any]:
        plan = self._ensure(pol)
        where = render(_coalesce(SqlExpr(plan)(cond)))
        rows = self.mem.execute(
            f"SELECT gold, cur_route, count(*) FROM {TABLE} WHERE {where} GROUP BY ALL"
        ).fetchall()
        matched = sum(r[2] for r in rows)
        mix: dict[str, int] = {}
        routes = {"done": 0, "review": 0, "manual": 0}
        for gold, route, n in rows:
            if gold is not None:
                mix[gold] = mix.get(gold, 0) + n
            routes[route] = routes.get(route, 0) + n
        n_gold = sum(mix.values())
        out: dict[str, Any] = {
            "query": text,
            "matched": matched,
            "total": self.total,
            "coverage": matched / self.total if self.total else 0.0,
            "gold": n_gold,
            "gold_mix": dict(sorted(mix.items(), key=lambda kv: -kv[1])),
            "current_routes": routes,
            "majority": None,
            "accuracy": None,
            "ci95": None,
            "estimated": None,
        }
        if n_gold:
            label, correct = max(mix.items(), key=lambda kv: (kv[1], kv[0]))
            ci = wilson(correct, n_gold)
            out.update(majority=label, accuracy=correct / n_gold, ci95=list(ci) if ci else None)
        elif matched:
            out["estimated"] = self._estimate(plan, where)
        return out

    def _estimate(self, plan: Plan, where: str) -> dict[str, Any] | None:
        """The label model's label mix for matched rows (fitted on the current policy's rules)."""
        from labelql.labelmodel import fit

        pol = self.policy
        if not pol.rules or not pol.labels:
            return None
        to_sql = SqlExpr(self._plan(pol))
        votes_sql = ", ".join(
            f"{render(_coalesce(to_sql(r.condition)))} AS {rule_column(r.index)}" for r in pol.rules
        )
        arrow = fetch_arrow(self.mem, f"SELECT {where} AS hit, {votes_sql} FROM {TABLE}")
        votes = np.column_stack(
            [arrow.column(rule_column(r.index)).to_numpy(zero_copy_only=False) for r in pol.rules]
        ).astype(bool)
        hit = arrow.column("hit").to_numpy(zero_copy_only=False).astype(bool)
        labels = tuple(pol.labels)
        model = fit(votes, [labels.index(r.label) for r in pol.rules], labels)
        post = model.posterior(votes[hit]).mean(axis=0)
        k = int(np.argmax(post))
        return {
            "label": labels[k],
            "accuracy": float(post[k]),
            "mix": dict(zip(labels, map(float, post), strict=True)),
        }

    def what_if(self, text: str) -> Answer:
        """What a rule would change if added: rows newly decided, moved, relabelled, new conflicts."""
        pol = self._check_with(text)
        rule = pol.rules[-1]
        plan = self._ensure(pol)
        carry = ("gold", "cur_label", "cur_route", "cur_reason")
        sql = render(decide_select(plan, TABLE, carry))
        col = rule_column(rule.index)
        rows = self.mem.execute(
            f"SELECT cur_route, cur_label, route, label, coalesce(reason LIKE 'conflict%', false), "
            f"coalesce(cur_reason LIKE 'conflict%', false), gold, {col}, count(*) FROM ({sql}) GROUP BY ALL"
        ).fetchall()
        self.pending_text = text.strip()
        self.last = _Query(text.strip(), rule.condition, pol)
        return Answer("rule", _what_if_report(rule, rows, self.total))

    def statement(self, text: str) -> Answer:
        """Keep a let, anchors, clusters, slice, labels, embedding, projection or import statement."""
        pol = self._check_with(text)
        self._adopt(self._base() + _body(text.strip()))
        data: dict[str, Any] = {"kept": text.strip().split()[0].lower(), "text": text.strip()}
        kind = data["kept"]
        name = _defined_name(text)
        if kind == "let" and name:
            let = pol.let(name)
            data["name"] = name
            data["type"] = let.expr.type
            if let.expr.type == P.BOOL:
                self.last = _Query(name, let.expr, pol)
                data["measure"] = self._measure(pol, let.expr, name)
        elif kind == "slice" and name:
            cond = next(s.condition for s in pol.slices if s.name == name)
            self.last = _Query(name, cond, pol)
            data["name"] = name
            data["measure"] = self._measure(pol, cond, name)
        elif kind == "clusters":
            self._ensure(self.policy, tuple(("cluster", cs.projection) for cs in self.policy.cluster_sets))
            data["clusters"] = _cluster_sizes(self.mem, self.policy, self._plan(self.policy))
        return Answer("statement", data, notices=[d.render(pol.sources) for d in _typed_warnings(pol)])

    def _adopt(self, text: str) -> None:
        """Make ``text`` the session's policy (it must check) and re-decide every row."""
        self.policy = self._check(text)
        self.text = text
        self._decide()

    # -- commands --------------------------------------------------------------------------------
    def _command(self, line: str) -> Answer:
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        handler = COMMANDS.get(name.lower())
        if handler is None:
            raise LabelQLError(
                f"unknown command ':{name}'", hint=did_you_mean(name, COMMANDS) or "type :help for the list"
            )
        return handler(self, arg)

    def cmd_add(self, arg: str) -> Answer:
        if self.pending_text is None:
            raise LabelQLError(
                "no rule to add", hint="type a rule first, e.g. dog IF cluster(umap) = dogs -> done"
            )
        self._assign()
        before = route_table(_Mem(self.mem), ASSIGN, gold_in_table=True)
        self._adopt(self._base() + _body(self.pending_text))
        self._assign()
        after = route_table(_Mem(self.mem), ASSIGN, gold_in_table=True)
        rule = self.policy.rules[-1]
        self.pending_text = None
        return Answer(
            "added", {"rule": len(self.policy.rules), "name": rule.name, "before": before, "routes": after}
        )

    def cmd_drop(self, arg: str) -> Answer:
        rules = self.policy.rules
        if not arg.isdigit() or not 1 <= int(arg) <= len(rules):
            raise LabelQLError(
                f"':drop {arg}': give a rule number from 1 to {len(rules)}"
                if rules
                else "the policy has no rules",
                hint="see the numbers with :rules",
            )
        rule = rules[int(arg) - 1]
        start = self.text.rfind("\n", 0, rule.span.start) + 1
        end = self.text.find("\n", rule.span.end)
        end = len(self.text) if end < 0 else end + 1
        self._adopt(self.text[:start] + self.text[end:])
        return Answer("dropped", {"rule": int(arg), "name": rule.name, "text": _rule_text(rule)})

    def cmd_rules(self, arg: str) -> Answer:
        plan = self._assign()
        rules = rule_stats(_Mem(self.mem), plan, ASSIGN, gold_in_table=True)
        routes = route_table(_Mem(self.mem), ASSIGN, gold_in_table=True)
        if self.gold_rows < self.total:
            estimate(_Mem(self.mem), plan, rules, routes, ASSIGN)
        for i, (r, d) in enumerate(zip(rules, self.policy.rules, strict=True), start=1):
            r["n"] = i
            r["text"] = _rule_text(d)
        return Answer("rules", {"rules": rules})

    def cmd_routes(self, arg: str) -> Answer:
        plan = self._assign()
        routes = route_table(_Mem(self.mem), ASSIGN, gold_in_table=True)
        rules = rule_stats(_Mem(self.mem), plan, ASSIGN, gold_in_table=True)
        estimate(_Mem(self.mem), plan, rules, routes, ASSIGN)
        return Answer("routes", {"routes": routes, "total": self.total, "gold": self.gold_rows})

    def cmd_why(self, arg: str) -> Answer:
        from labelql.why import explain_row

        if not arg:
            raise LabelQLError("':why' needs a row key", hint="e.g. :why cat_vs_dog_3")
        with self._store(read_only=True) as store:
            return Answer("why", explain_row(store, self.policy, arg.strip().strip("\"'")))

    def cmd_sample(self, arg: str) -> Answer:
        if self.last is None:
            raise LabelQLError("nothing to sample yet", hint="type a condition first")
        n = int(arg) if arg.isdigit() else 10
        plan = self._ensure(self.last.policy)
        shown = plan.inputs_read(self.last.condition)
        where = render(_coalesce(SqlExpr(plan)(self.last.condition)))
        cols = ", ".join(["key", *shown, "gold", "cur_label", "cur_route"])
        rows = self.mem.execute(
            f"SELECT {cols} FROM {TABLE} WHERE {where} ORDER BY hash(key), key LIMIT {int(n)}"
        ).fetchall()
        keys = [r[0] for r in rows]
        with self._store(read_only=True) as store:
            uris = dict(
                store.con.execute("SELECT key, uri FROM rows WHERE list_contains(?, key)", [keys]).fetchall()
            )
        header = ["key", "path", *shown.values(), "gold", "label now", "route now"]
        body = [[r[0], uris.get(r[0]), *r[1:]] for r in rows]
        return Answer("sample", {"query": self.last.text, "columns": header, "rows": body})

    def _numeric(self, text: str) -> tuple[P.TExpr, P.CheckedPolicy, Plan]:
        pol = self._check_with(text, f"let {SWEEP} = ")
        e = pol.let(SWEEP).expr
        if e.type not in P.NUMERIC:
            raise LabelQLError(
                f"{text!r} is a {e.type}, not a number",
                hint='sweep a score, e.g. :sweep text("photo of a dog")',
            )
        return e, pol, self._ensure(pol)

    def cmd_sweep(self, arg: str) -> Answer:
        m = re.match(
            r"^(.*?)(?:\s+for\s+([A-Za-z_]\w*))?(?:\s+from\s+(\S+)\s+to\s+(\S+)(?:\s+step\s+(\S+))?)?\s*$",
            arg,
        )
        if not arg or m is None:
            raise LabelQLError(
                "':sweep' needs a score",
                hint=':sweep text("photo of a dog") [for dog] [from 0.5 to 0.7 step 0.01]',
            )
        expr_text, label = m.group(1), m.group(2)
        lo, hi, step = (float(m.group(3) or 0.5), float(m.group(4) or 0.7), float(m.group(5) or 0.01))
        if step <= 0 or hi < lo or (hi - lo) / step > 200:
            raise LabelQLError("the sweep's range is empty or too fine", hint="at most 200 steps")
        e, _, plan = self._numeric(expr_text)
        self._known_label(label)
        x = render(SqlExpr(plan)(e))
        thresholds = [round(lo + i * step, 10) for i in range(round((hi - lo) / step) + 1)]
        labels = sorted(self.policy.labels) or sorted(_gold_labels(self.mem))
        parts = []
        for t in thresholds:
            parts.append(f"count_if({x} > {t!r})")
            parts.append(f"count_if({x} > {t!r} AND gold IS NOT NULL)")
            parts.extend(f"count_if({x} > {t!r} AND gold = ?)" for _ in labels)
        row = self.mem.execute(
            f"SELECT {', '.join(parts)} FROM {TABLE}", labels * len(thresholds)
        ).fetchall()[0]
        width = 2 + len(labels)
        out = []
        for i, t in enumerate(thresholds):
            matched, n_gold, *per = row[i * width : (i + 1) * width]
            counts = dict(zip(labels, per, strict=True))
            lab = label or (max(counts, key=lambda k: (counts[k], k)) if n_gold else None)
            correct = counts.get(lab, 0) if lab else 0
            ci = wilson(correct, n_gold) if n_gold else None
            out.append(
                {
                    "threshold": t,
                    "matched": matched,
                    "coverage": matched / self.total if self.total else 0.0,
                    "label": lab,
                    "gold": n_gold,
                    "accuracy": correct / n_gold if n_gold else None,
                    "ci95": list(ci) if ci else None,
                }
            )
        return Answer("sweep", {"expr": expr_text.strip(), "for": label, "rows": out, "total": self.total})

    def cmd_suggest(self, arg: str) -> Answer:
        m = re.match(
            r"^(.*?)\s+(?:precision|accuracy)\s*>=\s*([0-9.]+)(?:\s+for\s+([A-Za-z_]\w*))?\s*$", arg, re.I
        )
        if m is None:
            raise LabelQLError(
                "':suggest' needs a score and a target",
                hint=':suggest text("photo of a dog") precision>=0.999 [for dog]',
            )
        expr_text, target, label = m.group(1), float(m.group(2)), m.group(3)
        if not 0 < target <= 1:
            raise LabelQLError(f"precision target {target} is not in (0, 1]", hint="e.g. precision>=0.999")
        e, _, plan = self._numeric(expr_text)
        self._known_label(label)
        x = render(SqlExpr(plan)(e))
        arrow = fetch_arrow(self.mem, f"SELECT {x} AS x, gold FROM {TABLE} WHERE {x} IS NOT NULL")
        values = arrow.column("x").to_numpy(zero_copy_only=False).astype(np.float64)
        gold = np.asarray(arrow.column("gold").to_pylist(), dtype=object)
        return Answer("suggest", _suggest(expr_text.strip(), values, gold, target, label, self.total))

    def _known_label(self, label: str | None) -> None:
        known = set(self.policy.labels) | _gold_labels(self.mem)
        if label is not None and label not in known:
            raise LabelQLError(
                f"unknown label '{label}'",
                hint=did_you_mean(label, known) or f"labels: {', '.join(sorted(known))}",
            )

    def cmd_save(self, arg: str) -> Answer:
        from labelql.formatter import format_source

        if not arg:
            raise LabelQLError("':save' needs a file name", hint=":save rules/my_policy.lql")
        target = Path(arg.strip().strip("\"'"))
        text = format_source(self.text, self.file)
        if (
            self.path is not None
            and target.resolve().parent != self.path.resolve().parent
            and self.policy.imports
        ):
            raise LabelQLError(
                f"{target} is in another folder than {self.path}: its imports would not resolve",
                hint=f"save next to {self.path}",
            )
        check_file(target, text)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return Answer(
            "saved", {"path": str(target), "rules": len(self.policy.rules), "lines": text.count("\n")}
        )

    def cmd_diff(self, arg: str) -> Answer:
        from labelql.formatter import format_source

        old = format_source(self.original, self.file) if self.original.strip() else ""
        new = format_source(self.text, self.file) if self.text.strip() else ""
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), self.file, "session", n=1
            )
        )
        return Answer("diff", {"diff": diff})

    def cmd_policy(self, arg: str) -> Answer:
        from labelql.formatter import format_source

        return Answer("policy", {"text": format_source(self.text, self.file) if self.text.strip() else ""})

    def cmd_load(self, arg: str) -> Answer:
        path = Path(arg.strip().strip("\"'")) if arg else self.path
        if path is None:
            raise LabelQLError("':load' needs a policy file", hint=":load rules/cats_dogs.lql")
        text = read_source(path)
        policy = check_file(path, text)
        self.path, self.file, self.original, self.text, self.policy = path, str(path), text, text, policy
        self.pending_text = None
        self.refresh(force=True)
        return Answer("loaded", {"path": str(path), "rules": len(policy.rules)})

    def cmd_help(self, arg: str) -> Answer:
        return Answer("help", {"commands": HELP})


class _Mem:
    """The in-memory connection in the shape the engine's measuring functions take."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con


COMMANDS = {
    "add": Session.cmd_add,
    "drop": Session.cmd_drop,
    "rules": Session.cmd_rules,
    "routes": Session.cmd_routes,
    "why": Session.cmd_why,
    "sample": Session.cmd_sample,
    "sweep": Session.cmd_sweep,
    "suggest": Session.cmd_suggest,
    "save": Session.cmd_save,
    "diff": Session.cmd_diff,
    "policy": Session.cmd_policy,
    "load": Session.cmd_load,
    "help": Session.cmd_help,
}
HELP = [
    (
        "CONDITION",
        'rows it matches, coverage, gold label mix, majority accuracy [95% CI]; e.g. text("a cat") > 0.61',
    ),
    ("RULE", "what adding it would change (nothing is kept until :add)  e.g. cat IF nl_cat_high -> done"),
    ("let / anchors / clusters / slice ...", "checked with the policy, then kept"),
    (":add", "keep the last rule typed"),
    (":drop N", "remove rule N (numbers from :rules)"),
    (":rules", "per-rule table: matched, coverage, overlaps, conflicts, decided, accuracy"),
    (":routes", "the route table: done / review / manual, accuracy, cumulative coverage"),
    (":why KEY", "every rule and let on one row, and its decision"),
    (":sample [N]", "N rows of the last query (default 10) with path and the scores it used"),
    (
        ":sweep SCORE [for LABEL] [from A to B step S]",
        "coverage and accuracy per threshold (0.50 to 0.70 by 0.01)",
    ),
    (":suggest SCORE precision>=P [for LABEL]", "the lowest threshold whose precision meets P"),
    (":save FILE", "write the session's policy (formatted, checked)"),
    (":diff", "the session's changes to the loaded policy"),
    (":policy", "the session's policy"),
    (":load [FILE]", "load a policy file (again); the session's edits are dropped"),
    (":help", "this list;  :quit (or Ctrl-D) leaves"),
]


# -- helpers ---------------------------------------------------------------------------------------
def _body(typed: str, prefix: str = "") -> str:
    """Typed text as policy lines: continuation lines indented so they continue the statement."""
    lines = typed.split("\n")
    return prefix + lines[0] + "".join("\n" + CONT + ln for ln in lines[1:]) + "\n"


def _file_stat(path: Path) -> tuple[int, ...]:
    out: list[int] = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
            out += [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            out += [0, 0]
    return tuple(out)


def _content(store: Store) -> tuple[Any, ...]:
    """What the session's copy depends on: rows, gold, vectors, scores and clusters."""
    return tuple(
        store.con.execute(
            "SELECT (SELECT count(*) FROM rows), (SELECT max(added_at) FROM rows), "
            "(SELECT count(*) FROM gold), (SELECT max(created_at) FROM gold), "
            "(SELECT sum(revision) FROM spaces), "
            "(SELECT max(id) FROM cluster_runs), (SELECT max(computed_at) FROM signals)"
        ).fetchall()[0]
    )


def _plan_columns(policy: P.CheckedPolicy) -> dict[tuple[str, str], Column]:
    plan = build_plan(policy)
    return {(c.kind, c.source): c for c in plan.columns}


def _coalesce(e: Any) -> Any:
    from sqlglot import exp

    return exp.Coalesce(this=e, expressions=[exp.false()])


def _gold_labels(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The gold labels the session's rows carry (each row's gold after audit > import > ingest)."""
    return {r[0] for r in con.execute(f"SELECT DISTINCT gold FROM {TABLE} WHERE gold IS NOT NULL").fetchall()}


def _defined_name(text: str) -> str | None:
    toks = [t for t in tokenize(text, REPL_FILE)[0] if t.type not in ("NL", "COMMENT")]
    return toks[1].value if len(toks) > 1 and toks[1].type == "NAME" else None


def _rule_text(rule: P.RuleDef) -> str:
    return f"{rule.label} IF {text_of(rule.condition)} -> {rule.route}"


def _typed_warnings(pol: P.CheckedPolicy) -> list[Diagnostic]:
    return [d for d in pol.warnings if d.code != "unused"]


def _remap(e: DiagnosticError, file: str, base_lines: int, prefix: int, typed: str) -> DiagnosticError:
    """Move diagnostics that point into the typed text onto ``<repl>`` with its own lines and columns."""
    out = []
    for d in e.diagnostics:
        s = d.span
        if s is not None and s.file == file and s.line > base_lines:
            line, end_line = s.line - base_lines, s.end_line - base_lines

            def col(ln: int, c: int) -> int:
                return max(1, c - (prefix if ln == 1 else len(CONT)))

            s = Span(REPL_FILE, line, col(line, s.col), end_line, col(end_line, s.end_col))
            d = replace(d, span=s)
        out.append(d)
    sources = e.sources or SourceMap()
    sources.add(REPL_FILE, typed)
    return DiagnosticError(out, sources)


def _what_if_report(rule: P.RuleDef, rows: list[tuple[Any, ...]], total: int) -> dict[str, Any]:
    matched = n_gold = correct = newly = relabelled = conflicts = 0
    moves: dict[tuple[str, str], int] = {}
    before: dict[str, list[int]] = {r: [0, 0, 0] for r in ("done", "review", "manual")}
    after: dict[str, list[int]] = {r: [0, 0, 0] for r in ("done", "review", "manual")}
    for cur_route, cur_label, route, label, conflict, cur_conflict, gold, hit, n in rows:
        for table, r, lab in ((before, cur_route, cur_label), (after, route, label)):
            table[r][0] += n
            if gold is not None and lab is not None:
                table[r][1] += n
                table[r][2] += n if gold == lab else 0
        if hit:
            matched += n
            if gold is not None:
                n_gold += n
                correct += n if gold == rule.label else 0
        if cur_label is None and label is not None:
            newly += n
        elif cur_label is not None and label is not None and cur_label != label:
            relabelled += n
        if cur_route != route:
            moves[(cur_route, route)] = moves.get((cur_route, route), 0) + n
        if conflict and not cur_conflict:
            conflicts += n
    ci = wilson(correct, n_gold)

    def routes(t: dict[str, list[int]]) -> list[dict[str, Any]]:
        return [
            {
                "route": r,
                "rows": v[0],
                "share": v[0] / total if total else 0.0,
                "accuracy": v[2] / v[1] if v[1] and r != "manual" else None,
            }
            for r, v in t.items()
        ]

    return {
        "rule": _rule_text(rule),
        "label": rule.label,
        "route": rule.route,
        "matched": matched,
        "coverage": matched / total if total else 0.0,
        "gold": n_gold,
        "accuracy": correct / n_gold if n_gold else None,
        "ci95": list(ci) if ci else None,
        "newly_decided": newly,
        "relabelled": relabelled,
        "new_conflicts": conflicts,
        "moves": [{"from": a, "to": b, "rows": n} for (a, b), n in sorted(moves.items())],
        "routes_before": routes(before),
        "routes_after": routes(after),
    }


def _suggest(
    expr_text: str,
    values: np.ndarray[Any, Any],
    gold: np.ndarray[Any, Any],
    target: float,
    label: str | None,
    total: int,
) -> dict[str, Any]:
    """The lowest threshold t (on a 0.001 grid, or finer for small ranges) with precision(x > t) >= target."""
    has = np.asarray([g is not None for g in gold], dtype=bool)
    xg, gg = values[has], gold[has]
    if not len(xg):
        raise LabelQLError("no gold labels: precision cannot be measured", hint="labelql gold import FILE")
    if label is None:
        top = xg >= np.quantile(xg, 0.99)
        names, counts = np.unique(gg[top].astype(str), return_counts=True)
        label = str(names[int(np.argmax(counts))])
    span = float(values.max() - values.min()) or 1.0
    step = 10.0 ** (np.floor(np.log10(span)) - 3)
    grid = np.arange(np.floor(values.min() / step) * step - step, values.max() + step, step)
    order = np.sort(xg)
    hits = np.sort(xg[gg == label])
    above = len(order) - np.searchsorted(order, grid, side="right")
    good = len(hits) - np.searchsorted(hits, grid, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(above > 0, good / np.maximum(above, 1), np.nan)
    ok = np.nonzero(precision >= target)[0]
    decimals = max(0, int(-np.log10(step)))
    if not len(ok):
        best = int(np.nanargmax(precision))
        return {
            "expr": expr_text,
            "label": label,
            "target": target,
            "threshold": None,
            "best_precision": float(precision[best]),
            "best_threshold": round(float(grid[best]), decimals),
        }
    i = int(ok[0])
    t = round(float(grid[i]), decimals)
    matched = int((values > t).sum())
    ci = wilson(int(good[i]), int(above[i]))
    return {
        "expr": expr_text,
        "label": label,
        "target": target,
        "threshold": t,
        "rule": f"{label} IF {expr_text} > {t} -> done",
        "matched": matched,
        "coverage": matched / total if total else 0.0,
        "gold": int(above[i]),
        "precision": float(good[i] / above[i]),
        "ci95": list(ci) if ci else None,
        "lower_bound_meets": bool(ci and ci[0] >= target),
    }


def _cluster_sizes(
    con: duckdb.DuckDBPyConnection, policy: P.CheckedPolicy, plan: Plan
) -> list[dict[str, Any]]:
    out = []
    for cs in policy.cluster_sets:
        key = ("cluster", cs.projection)
        if key not in plan.by_source:
            continue
        col = plan.by_source[key]
        for name, n in con.execute(
            f"SELECT {col}, count(*) FROM {TABLE} GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall():
            out.append({"projection": cs.projection, "cluster": name, "rows": n})
    return out
