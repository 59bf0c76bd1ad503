"""The checked policy: what the checker guarantees and every later stage consumes.

Everything here is resolved (names point at definitions that exist), typed (every expression
knows its type) and validated (thresholds in range, arities right), so the planner and engine
never re-validate.  Expressions form a small typed IR, separate from the syntax tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from labelql.diagnostics import Diagnostic, SourceMap, Span

_NO_SPAN = Span("<none>", 0, 0, 0, 0)

# Expression types.
FLOAT, INT, NUMBER, BOOL, STRING = "float", "int", "number", "bool", "string"
CLUSTER, TIMESTAMP, INTERVAL, ANY = "cluster", "timestamp", "interval", "any"
NUMERIC = frozenset({FLOAT, INT, NUMBER})
ROUTES = ("done", "review")
ROUTE_RANK = {"done": 2, "review": 1, "manual": 0}


@dataclass(frozen=True)
class TNode:
    """A typed expression node; ``span`` points at the source and takes no part in equality."""

    span: Span = field(default=_NO_SPAN, compare=False, repr=False, kw_only=True)

    @property
    def type(self) -> str:
        raise TypeError(f"{type(self).__name__} is an abstract node: every expression node defines its type")

    def children(self) -> tuple[TExpr, ...]:
        return ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": type(self).__name__, "type": self.type}
        for f in fields(self):
            if f.name != "span":
                out[f.name] = _json(getattr(self, f.name))
        return out


def _json(v: Any) -> Any:
    if isinstance(v, TNode):
        return v.to_json()
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    return v


@dataclass(frozen=True)
class Const(TNode):
    value: Any
    kind: str  # NUMBER, STRING or BOOL

    @property
    def type(self) -> str:
        return self.kind


@dataclass(frozen=True)
class ClusterName(TNode):
    projection: str
    name: str

    @property
    def type(self) -> str:
        return CLUSTER


@dataclass(frozen=True)
class IntervalConst(TNode):
    text: str

    @property
    def type(self) -> str:
        return INTERVAL


@dataclass(frozen=True)
class TextScore(TNode):
    """Cosine similarity of each row's vector in ``space`` with the encoded ``prompt``."""

    space: str
    prompt: str

    @property
    def type(self) -> str:
        return FLOAT


@dataclass(frozen=True)
class SimilarScore(TNode):
    """Max cosine similarity of each row with the anchor rows ``keys`` (from set ``anchors``)."""

    space: str
    anchors: str | None
    keys: tuple[str, ...]

    @property
    def type(self) -> str:
        return FLOAT


@dataclass(frozen=True)
class NearCount(TNode):
    """How many of the anchor rows have cosine similarity >= ``threshold`` with each row."""

    space: str
    anchors: str
    keys: tuple[str, ...]
    threshold: float

    @property
    def type(self) -> str:
        return INT


@dataclass(frozen=True)
class ClusterOf(TNode):
    projection: str

    @property
    def type(self) -> str:
        return CLUSTER


@dataclass(frozen=True)
class MetaField(TNode):
    name: str

    @property
    def type(self) -> str:
        return ANY


@dataclass(frozen=True)
class Builtin(TNode):
    """``added`` (timestamp), ``unlabeled`` (bool) or ``now`` (timestamp)."""

    name: str

    @property
    def type(self) -> str:
        return {"added": TIMESTAMP, "unlabeled": BOOL, "now": TIMESTAMP}[self.name]


@dataclass(frozen=True)
class LetRef(TNode):
    name: str
    let_type: str

    @property
    def type(self) -> str:
        return self.let_type


@dataclass(frozen=True)
class Arith(TNode):
    op: str
    left: TExpr
    right: TExpr
    result: str

    @property
    def type(self) -> str:
        return self.result

    def children(self) -> tuple[TExpr, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Neg(TNode):
    operand: TExpr

    @property
    def type(self) -> str:
        return FLOAT

    def children(self) -> tuple[TExpr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Cmp(TNode):
    op: str  # = != < <= > >=
    left: TExpr
    right: TExpr

    @property
    def type(self) -> str:
        return BOOL

    def children(self) -> tuple[TExpr, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Range(TNode):
    operand: TExpr
    low: TExpr
    high: TExpr
    negated: bool = False

    @property
    def type(self) -> str:
        return BOOL

    def children(self) -> tuple[TExpr, ...]:
        return (self.operand, self.low, self.high)


@dataclass(frozen=True)
class Member(TNode):
    operand: TExpr
    items: tuple[TExpr, ...]
    negated: bool = False

    @property
    def type(self) -> str:
        return BOOL

    def children(self) -> tuple[TExpr, ...]:
        return (self.operand, *self.items)


@dataclass(frozen=True)
class AllOf(TNode):
    operands: tuple[TExpr, ...]

    @property
    def type(self) -> str:
        return BOOL

    def children(self) -> tuple[TExpr, ...]:
        return self.operands


@dataclass(frozen=True)
class AnyOf(TNode):
    operands: tuple[TExpr, ...]

    @property
    def type(self) -> str:
        return BOOL

    def children(self) -> tuple[TExpr, ...]:
        return self.operands


@dataclass(frozen=True)
class Negate(TNode):
    operand: TExpr

    @property
    def type(self) -> str:
        return BOOL

    def children(self) -> tuple[TExpr, ...]:
        return (self.operand,)


TExpr = (
    Const
    | ClusterName
    | IntervalConst
    | TextScore
    | SimilarScore
    | NearCount
    | ClusterOf
    | MetaField
    | Builtin
    | LetRef
    | Arith
    | Neg
    | Cmp
    | Range
    | Member
    | AllOf
    | AnyOf
    | Negate
)
SIGNALS = (TextScore, SimilarScore, NearCount, ClusterOf, MetaField)


def walk(e: TExpr) -> list[TExpr]:
    """``e`` and every node below it, parents first."""
    out = [e]
    for c in e.children():
        out.extend(walk(c))
    return out


def walk_through_lets(e: TExpr, lets: dict[str, TExpr]) -> list[TExpr]:
    """Like :func:`walk`, and into the definition of every let it uses (the inputs a condition reads)."""
    out: list[TExpr] = []
    for node in walk(e):
        out.append(node)
        if isinstance(node, LetRef) and node.name in lets:
            out.extend(walk_through_lets(lets[node.name], lets))
    return out


# -- definitions ---------------------------------------------------------------------------------
Params = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class SpaceDef:
    """An embedding space: ``provider`` is open_clip, sentence_transformer or precomputed."""

    name: str
    provider: str
    params: Params
    default: bool
    span: Span = field(compare=False, repr=False)

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class ProjectionDef:
    name: str
    kind: str  # umap, tsne, pca
    space: str
    params: Params
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class ClusterSpec:
    """How one cluster name is given: by a prompt (``by='text'``) or by an anchor set."""

    name: str
    by: str
    prompt: str | None
    anchors: str | None
    space: str
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class ClusterSetDef:
    projection: str
    params: Params
    clusters: tuple[ClusterSpec, ...]
    span: Span = field(compare=False, repr=False)

    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clusters)


@dataclass(frozen=True)
class AnchorSet:
    name: str
    keys: tuple[str, ...]
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class LetDef:
    name: str
    expr: TExpr
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class RuleDef:
    """``label IF condition -> route``; unnamed rules are named ``file:line``."""

    name: str
    label: str
    route: str
    condition: TExpr
    index: int
    named: bool
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class SliceDef:
    name: str
    condition: TExpr
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Expectation:
    """What ``labelql test`` checks after routing.

    ``metric`` (coverage, accuracy, rows, errors) of ``target`` (a route, or a rule's name) compared
    with ``value``; or, with ``key`` set, that row's label and/or route.
    """

    text: str
    metric: str | None = None
    target: str | None = None
    op: str | None = None
    value: float | None = None
    key: str | None = None
    label: str | None = None
    route: str | None = None
    span: Span = field(default=_NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class CheckedPolicy:
    """A resolved, typed, validated policy (see module docstring)."""

    path: str
    source_hash: str
    labels: tuple[str, ...]
    spaces: tuple[SpaceDef, ...]
    default_space: str | None
    projections: tuple[ProjectionDef, ...]
    cluster_sets: tuple[ClusterSetDef, ...]
    anchors: tuple[AnchorSet, ...]
    lets: tuple[LetDef, ...]  # in dependency order: a let comes after the lets it uses
    rules: tuple[RuleDef, ...]
    slices: tuple[SliceDef, ...]
    imports: tuple[str, ...]
    warnings: tuple[Diagnostic, ...] = ()
    sources: SourceMap | None = field(default=None, compare=False, repr=False)
    expectations: tuple[Expectation, ...] = ()

    def space(self, name: str) -> SpaceDef:
        return next(s for s in self.spaces if s.name == name)

    def expressions(self) -> list[TExpr]:
        """Every expression the policy evaluates: its lets, rule conditions and slices."""
        return (
            [x.expr for x in self.lets]
            + [r.condition for r in self.rules]
            + [s.condition for s in self.slices]
        )

    def projection(self, name: str) -> ProjectionDef:
        return next(p for p in self.projections if p.name == name)

    def let(self, name: str) -> LetDef:
        return next(x for x in self.lets if x.name == name)

    def anchor_set(self, name: str) -> AnchorSet:
        return next(a for a in self.anchors if a.name == name)

    def to_json(self) -> dict[str, Any]:
        def at(s: Span) -> str:
            return f"{s.file}:{s.line}:{s.col}"

        return {
            "path": self.path,
            "source_hash": self.source_hash,
            "labels": list(self.labels),
            "default_space": self.default_space,
            "spaces": [
                {
                    "name": s.name,
                    "provider": s.provider,
                    "params": dict(s.params),
                    "default": s.default,
                    "at": at(s.span),
                }
                for s in self.spaces
            ],
            "projections": [
                {"name": p.name, "kind": p.kind, "space": p.space, "params": dict(p.params), "at": at(p.span)}
                for p in self.projections
            ],
            "clusters": [
                {
                    "projection": c.projection,
                    "params": dict(c.params),
                    "names": [
                        {
                            "name": n.name,
                            "by": n.by,
                            "prompt": n.prompt,
                            "anchors": n.anchors,
                            "space": n.space,
                        }
                        for n in c.clusters
                    ],
                }
                for c in self.cluster_sets
            ],
            "anchors": [{"name": a.name, "keys": list(a.keys)} for a in self.anchors],
            "lets": [
                {"name": x.name, "type": x.expr.type, "expr": x.expr.to_json(), "at": at(x.span)}
                for x in self.lets
            ],
            "rules": [
                {
                    "name": r.name,
                    "label": r.label,
                    "route": r.route,
                    "condition": r.condition.to_json(),
                    "at": at(r.span),
                }
                for r in self.rules
            ],
            "slices": [
                {"name": s.name, "condition": s.condition.to_json(), "at": at(s.span)} for s in self.slices
            ],
            "imports": list(self.imports),
            "warnings": [w.to_json() for w in self.warnings],
        }


def text_of(e: TExpr) -> str:
    """A readable form of a typed expression, close to how the policy writes it."""
    if isinstance(e, TextScore):
        return f'text("{e.prompt}")'
    if isinstance(e, SimilarScore):
        return f"similar({e.anchors or repr(e.keys[0])})"
    if isinstance(e, NearCount):
        return f"near({e.anchors}, {e.threshold:g})"
    if isinstance(e, ClusterOf):
        return f"cluster({e.projection})"
    if isinstance(e, MetaField):
        return f'meta("{e.name}")'
    if isinstance(e, Builtin):
        return "now()" if e.name == "now" else e.name
    if isinstance(e, Const):
        return (
            repr(e.value) if e.kind == STRING else str(e.value).lower() if e.kind == BOOL else f"{e.value:g}"
        )
    if isinstance(e, ClusterName):
        return e.name
    if isinstance(e, IntervalConst):
        return f"interval '{e.text}'"
    if isinstance(e, LetRef):
        return e.name
    if isinstance(e, Arith):
        return f"{text_of(e.left)} {e.op} {text_of(e.right)}"
    if isinstance(e, Neg):
        return f"-{text_of(e.operand)}"
    if isinstance(e, Cmp):
        return f"{text_of(e.left)} {e.op} {text_of(e.right)}"
    if isinstance(e, Range):
        neg = "NOT " if e.negated else ""
        return f"{text_of(e.operand)} {neg}BETWEEN {text_of(e.low)} AND {text_of(e.high)}"
    if isinstance(e, Member):
        return (
            f"{text_of(e.operand)} {'NOT ' if e.negated else ''}IN ({', '.join(text_of(i) for i in e.items)})"
        )
    if isinstance(e, AllOf | AnyOf):
        word = " AND " if isinstance(e, AllOf) else " OR "
        return word.join(
            f"({text_of(o)})" if isinstance(o, AllOf | AnyOf) else text_of(o) for o in e.operands
        )
    if isinstance(e, Negate):
        return f"NOT {text_of(e.operand)}"
    raise TypeError(f"no text for {type(e).__name__}")
