"""Checked policy -> logical plan: which stored columns a policy reads, and what it computes from them.

The plan names every input column (a score, a cluster assignment, a metadata field, the ingest time,
whether a row is unlabeled) with a generated identifier, so user text never becomes an identifier, and
lists the lets, rules and slices over those columns. :mod:`labelql.compiler` turns it into SQL;
:mod:`labelql.evaluate` evaluates it in numpy (the independent check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labelql import policy as P
from labelql.signals import signal_id, store_space_name


@dataclass(frozen=True)
class Column:
    """One input column of the plan; ``name`` is generated (s0, c0, m0, ...)."""

    name: str
    kind: str  # score, cluster, meta, added, unlabeled
    source: str  # signal id, projection name, metadata field, or ""
    type: str


@dataclass(frozen=True)
class Plan:
    policy: P.CheckedPolicy
    columns: tuple[Column, ...]
    by_source: dict[tuple[str, str], str]  # (kind, source) -> column name

    def column_for(self, node: P.TExpr) -> str:
        """The input column that holds a signal node's values."""
        key = self.key_of(node)
        return self.by_source[key]

    def key_of(self, node: P.TExpr) -> tuple[str, str]:
        if isinstance(node, P.TextScore | P.SimilarScore | P.NearCount):
            return ("score", signal_id(node, store_space_name(self.policy, node.space)))
        if isinstance(node, P.ClusterOf):
            return ("cluster", node.projection)
        if isinstance(node, P.MetaField):
            return ("meta", node.name)
        if isinstance(node, P.Builtin) and node.name in ("added", "unlabeled"):
            return (node.name, "")
        raise TypeError(f"{type(node).__name__} is not an input column")

    def inputs_read(self, condition: P.TExpr) -> dict[str, str]:
        """The scores, cluster names and metadata ``condition`` reads, through the lets it uses:
        column name -> the input as the policy writes it (``text("photo of a cat")``), in reading order."""
        lets = {x.name: x.expr for x in self.policy.lets}
        out: dict[str, str] = {}
        for node in P.walk_through_lets(condition, lets):
            try:
                key = self.key_of(node)
            except TypeError:
                continue
            if key[0] in ("score", "cluster", "meta"):
                out.setdefault(self.by_source[key], P.text_of(node))
        return out

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        return {
            "inputs": [
                {"column": c.name, "kind": c.kind, "source": c.source, "type": c.type} for c in self.columns
            ],
            "lets": [
                {"column": let_column(i), "name": x.name, "type": x.expr.type} for i, x in enumerate(p.lets)
            ],
            "rules": [
                {"column": rule_column(r.index), "name": r.name, "label": r.label, "route": r.route}
                for r in p.rules
            ],
            "routing": "every rule on every row; the highest route among matching rules wins "
            "(done > review); "
            "rules at that route that disagree on the label make a conflict -> manual; no match -> manual",
        }


def rule_column(index: int) -> str:
    return f"r{index}"


def let_column(index: int) -> str:
    return f"l{index}"


_PREFIX = {"score": "s", "cluster": "c", "meta": "m", "added": "added", "unlabeled": "unlabeled"}


def build_plan(policy: P.CheckedPolicy) -> Plan:
    """Collect every input a policy's lets, rules and slices read."""
    seen: dict[tuple[str, str], Column] = {}
    counters: dict[str, int] = {}
    holder = Plan(policy, (), {})
    for e in policy.expressions():
        for node in P.walk(e):
            try:
                key = holder.key_of(node)
            except TypeError:
                continue
            if key in seen:
                continue
            kind = key[0]
            if kind in ("added", "unlabeled"):
                name = kind
            else:
                n = counters.get(kind, 0)
                counters[kind] = n + 1
                name = f"{_PREFIX[kind]}{n}"
            seen[key] = Column(name, kind, key[1], node.type)
    cols = tuple(seen.values())
    return Plan(policy, cols, {k: c.name for k, c in seen.items()})
