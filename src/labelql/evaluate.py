"""A plain numpy evaluation of a plan: the independent check of the SQL engine, and ``labelql why``.

Values are (data, valid) pairs so NULL behaves as in SQL: comparisons with NULL are NULL, AND / OR / NOT
follow three-valued (Kleene) logic, and a rule whose condition is NULL does not match. Routing follows the
same semantics as the compiler, written independently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelql import policy as P
from labelql.plan import Plan

_MICROSECONDS = {
    "microsecond": 1,
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
    "week": 604_800_000_000,
}


@dataclass
class V:
    """Values with a validity mask (False = SQL NULL)."""

    data: np.ndarray[Any, Any]
    valid: np.ndarray[Any, Any]


def _interval(text: str) -> np.timedelta64:
    """'7 days', '1 hour 30 minutes' as a timedelta (months and years vary in length: not evaluated here)."""
    total = 0.0
    for num, word in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.lower()):
        unit = word[:-1] if word.endswith("s") and word[:-1] in _MICROSECONDS else word
        if unit not in _MICROSECONDS:
            raise ValueError(f"interval unit {word!r} is not evaluated in numpy")
        total += float(num) * _MICROSECONDS[unit]
    return np.timedelta64(round(total), "us")


class Evaluator:
    """Evaluates typed expressions over a plan's input columns (``columns[name]`` -> V)."""

    def __init__(self, plan: Plan, columns: dict[str, V], n: int, now: np.datetime64 | None = None) -> None:
        self.plan = plan
        self.columns = columns
        self.n = n
        self.now = now if now is not None else np.datetime64("now", "us")
        self.lets = {x.name: x.expr for x in plan.policy.lets}

    def full(self, value: Any, dtype: Any = object) -> V:
        return V(np.full(self.n, value, dtype=dtype), np.ones(self.n, bool))

    def __call__(self, e: P.TExpr) -> V:
        if isinstance(e, P.Const):
            return self.full(e.value, float if e.kind == P.NUMBER else bool if e.kind == P.BOOL else object)
        if isinstance(e, P.ClusterName):
            return self.full(e.name)
        if isinstance(e, P.IntervalConst):
            return self.full(_interval(e.text), "m8[us]")
        if isinstance(e, P.TextScore | P.SimilarScore | P.NearCount | P.ClusterOf | P.MetaField):
            return self.columns[self.plan.column_for(e)]
        if isinstance(e, P.Builtin):
            if e.name == "now":
                return self.full(self.now, "M8[us]")
            return self.columns[self.plan.column_for(e)]
        if isinstance(e, P.LetRef):
            return self(self.lets[e.name])
        if isinstance(e, P.Arith):
            a, b = self._num(e.left, e.right), self._num(e.right, e.left)
            with np.errstate(all="ignore"):
                if e.op == "+":
                    data = a.data + b.data
                elif e.op == "-":
                    data = a.data - b.data
                elif e.op == "*":
                    data = a.data * b.data
                else:
                    data = a.data / np.where(b.data == 0, np.nan, b.data)
            valid = a.valid & b.valid
            if e.op == "/":
                valid &= b.data != 0
            return V(data, valid)
        if isinstance(e, P.Neg):
            a = self(e.operand)
            return V(-a.data, a.valid)
        if isinstance(e, P.Cmp):
            return self._cmp(e.op, self._num(e.left, e.right), self._num(e.right, e.left))
        if isinstance(e, P.Range):
            x, lo, hi = self._num(e.operand, e.low), self._num(e.low, e.operand), self._num(e.high, e.operand)
            out = self._and([self._cmp(">=", x, lo), self._cmp("<=", x, hi)])
            return self._not(out) if e.negated else out
        if isinstance(e, P.Member):
            x = self._num(e.operand, e.items[0])
            out = self._or([self._cmp("=", x, self._num(i, e.operand)) for i in e.items])
            return self._not(out) if e.negated else out
        if isinstance(e, P.AllOf):
            return self._and([self(o) for o in e.operands])
        if isinstance(e, P.AnyOf):
            return self._or([self(o) for o in e.operands])
        if isinstance(e, P.Negate):
            return self._not(self(e.operand))
        raise TypeError(f"the numpy evaluator has no case for {type(e).__name__}")

    def _num(self, side: P.TExpr, other: P.TExpr) -> V:
        v = self(side)
        if side.type == P.ANY and other.type in P.NUMERIC:
            out = np.full(self.n, np.nan)
            ok = np.zeros(self.n, bool)
            for i, (x, good) in enumerate(zip(v.data, v.valid, strict=True)):
                if good:
                    try:
                        out[i] = float(x)
                        ok[i] = True
                    except (TypeError, ValueError):
                        pass
            return V(out, ok)
        return v

    def _cmp(self, op: str, a: V, b: V) -> V:
        valid = a.valid & b.valid
        data = np.zeros(self.n, bool)
        idx = np.nonzero(valid)[0]
        if len(idx):
            x, y = a.data[idx], b.data[idx]
            res = {
                "=": lambda: x == y,
                "!=": lambda: x != y,
                "<": lambda: x < y,
                "<=": lambda: x <= y,
                ">": lambda: x > y,
                ">=": lambda: x >= y,
            }[op]()
            data[idx] = np.asarray(res, dtype=bool)
        return V(data, valid)

    @staticmethod
    def _truth(v: V) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        d = np.asarray(v.data, dtype=bool)
        return v.valid & d, v.valid & ~d  # definitely true, definitely false

    def _and(self, vs: list[V]) -> V:
        true = np.ones(self.n, bool)
        false = np.zeros(self.n, bool)
        for v in vs:
            t, f = self._truth(v)
            true &= t
            false |= f
        return V(true, true | false)

    def _or(self, vs: list[V]) -> V:
        true = np.zeros(self.n, bool)
        false = np.ones(self.n, bool)
        for v in vs:
            t, f = self._truth(v)
            true |= t
            false &= f
        return V(true, true | false)

    def _not(self, v: V) -> V:
        t, f = self._truth(v)
        return V(f, t | f)

    def matches(self, e: P.TExpr) -> np.ndarray[Any, Any]:
        """Where a condition is true (NULL counts as not matching, as COALESCE(cond, false))."""
        return self._truth(self(e))[0]


def route(plan: Plan, matched: dict[int, np.ndarray[Any, Any]], n: int) -> list[tuple[str | None, str]]:
    """(label, route) per row from each rule's match mask, by the documented semantics."""
    out: list[tuple[str | None, str]] = []
    rules = plan.policy.rules
    for i in range(n):
        done = {r.label for r in rules if r.route == "done" and matched[r.index][i]}
        review = {r.label for r in rules if r.route == "review" and matched[r.index][i]}
        if len(done) == 1:
            out.append((next(iter(done)), "done"))
        elif len(done) > 1:
            out.append((None, "manual"))
        elif len(review) == 1:
            out.append((next(iter(review)), "review"))
        else:
            out.append((None, "manual"))
    return out
