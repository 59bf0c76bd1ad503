"""The LabelQL syntax tree: frozen dataclasses, each with the source span it came from.

Spans never take part in equality (``compare=False``), so two trees parsed from differently laid
out sources compare equal exactly when they mean the same thing: what ``fmt`` must preserve.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from labelql.diagnostics import Span

_NO_SPAN = Span("<none>", 0, 0, 0, 0)


@dataclass(frozen=True)
class Node:
    span: Span = field(default=_NO_SPAN, compare=False, repr=False, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        """A plain-data view: node type, fields, and the span as ``line:col``."""
        out: dict[str, Any] = {"node": type(self).__name__}
        for f in fields(self):
            if f.name == "span":
                continue
            out[f.name] = _json(getattr(self, f.name))
        out["at"] = f"{self.span.line}:{self.span.col}"
        return out


def _json(v: Any) -> Any:
    if isinstance(v, Node):
        return v.to_json()
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    return v


# -- leaves --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Name(Node):
    """An identifier where the grammar expects one (a definition's name, a label, a route)."""

    value: str


@dataclass(frozen=True)
class Number(Node):
    value: float
    text: str = field(compare=False)


@dataclass(frozen=True)
class String(Node):
    value: str


@dataclass(frozen=True)
class Ident(Node):
    """A bare name inside an expression: a let, a builtin (``added``), a cluster name, ``true``."""

    name: str


@dataclass(frozen=True)
class Interval(Node):
    text: String


# -- expressions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg(Node):
    name: Name | None
    value: Expr


@dataclass(frozen=True)
class Call(Node):
    func: Name
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Expr


@dataclass(frozen=True)
class BinOp(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Between(Node):
    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(frozen=True)
class InList(Node):
    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True)
class Not(Node):
    operand: Expr


@dataclass(frozen=True)
class And(Node):
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Or(Node):
    operands: tuple[Expr, ...]


Expr = Number | String | Ident | Interval | Call | Unary | BinOp | Compare | Between | InList | Not | And | Or


# -- statements ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Labels(Node):
    names: tuple[Name, ...]


@dataclass(frozen=True)
class Embedding(Node):
    name: Name
    provider: Call


@dataclass(frozen=True)
class Projection(Node):
    name: Name
    method: Call


@dataclass(frozen=True)
class ClusterDef(Node):
    name: Name
    namer: Call


@dataclass(frozen=True)
class Clusters(Node):
    projection: Name
    params: tuple[Arg, ...]
    clusters: tuple[ClusterDef, ...]


@dataclass(frozen=True)
class Anchors(Node):
    name: Name
    keys: tuple[String, ...]


@dataclass(frozen=True)
class Let(Node):
    name: Name
    expr: Expr


@dataclass(frozen=True)
class Rule(Node):
    name: Name | None
    label: Name
    condition: Expr
    route: Name


@dataclass(frozen=True)
class Slice(Node):
    name: Name
    expr: Expr


@dataclass(frozen=True)
class Import(Node):
    path: String


@dataclass(frozen=True)
class Expect(Node):
    """``expect METRIC(x) >= v`` (``label``/``route`` None) or ``expect "key" -> label [route]``."""

    expr: Expr
    label: Name | None = None
    route: Name | None = None


Statement = Labels | Embedding | Projection | Clusters | Anchors | Let | Rule | Slice | Import | Expect


@dataclass(frozen=True)
class Comment(Node):
    """A ``#`` comment; ``trailing`` when it ends a line that holds code."""

    text: str
    trailing: bool = False


@dataclass(frozen=True)
class Module(Node):
    """One parsed file: its statements in order and its comments (kept for ``fmt``)."""

    file: str
    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False)
