"""Syntax tree -> canonical source text (``labelql fmt``).

One layout for every policy: statement keywords in lower case, operators (IF, AND, OR, NOT,
BETWEEN, IN) in upper case, one space around comparisons, ``=`` aligned across a run of
consecutive definitions of one kind, at most one blank line, comments kept where they stood, and
long conditions broken before their top-level AND / OR.  ``fmt`` is idempotent and
``parse(fmt(x)) == parse(x)`` (spans aside); both are tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labelql import ast as A
from labelql.parser import parse

MAX_WIDTH = 100
INDENT = "    "

_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_PRED, _PREC_SUM, _PREC_PRODUCT, _PREC_UNARY, _PREC_ATOM = range(1, 9)


def format_source(text: str, file: str = "<string>") -> str:
    """Format policy source; raises :class:`DiagnosticError` when it does not parse."""
    return format_module(parse(text, file), text)


def quote(s: str, q: str = '"') -> str:
    body = s.replace("\\", "\\\\").replace(q, "\\" + q).replace("\n", "\\n").replace("\t", "\\t")
    return f"{q}{body}{q}"


def _prec(e: A.Expr) -> int:
    if isinstance(e, A.Or):
        return _PREC_OR
    if isinstance(e, A.And):
        return _PREC_AND
    if isinstance(e, A.Not):
        return _PREC_NOT
    if isinstance(e, A.Compare | A.Between | A.InList):
        return _PREC_PRED
    if isinstance(e, A.BinOp):
        return _PREC_SUM if e.op in "+-" else _PREC_PRODUCT
    if isinstance(e, A.Unary):
        return _PREC_UNARY
    return _PREC_ATOM


def expr(e: A.Expr, need: int = _PREC_OR) -> str:
    """Render an expression, adding parentheses only where precedence needs them."""
    text = _expr(e)
    return f"({text})" if _prec(e) < need else text


def _expr(e: A.Expr) -> str:
    if isinstance(e, A.Or):
        return " OR ".join(expr(o, _PREC_AND) for o in e.operands)
    if isinstance(e, A.And):
        return " AND ".join(expr(o, _PREC_NOT) for o in e.operands)
    if isinstance(e, A.Not):
        return "NOT " + expr(e.operand, _PREC_NOT)
    if isinstance(e, A.Compare):
        return f"{expr(e.left, _PREC_SUM)} {e.op} {expr(e.right, _PREC_SUM)}"
    if isinstance(e, A.Between):
        neg = "NOT " if e.negated else ""
        low, high = expr(e.low, _PREC_SUM), expr(e.high, _PREC_SUM)
        return f"{expr(e.operand, _PREC_SUM)} {neg}BETWEEN {low} AND {high}"
    if isinstance(e, A.InList):
        neg = "NOT " if e.negated else ""
        return f"{expr(e.operand, _PREC_SUM)} {neg}IN ({', '.join(expr(i) for i in e.items)})"
    if isinstance(e, A.BinOp):
        p = _prec(e)
        return f"{expr(e.left, p)} {e.op} {expr(e.right, p + 1)}"
    if isinstance(e, A.Unary):
        return e.op + expr(e.operand, _PREC_UNARY)
    if isinstance(e, A.Number):
        return e.text
    if isinstance(e, A.String):
        return quote(e.value)
    if isinstance(e, A.Interval):
        return "interval " + quote(e.text.value, "'")
    if isinstance(e, A.Ident):
        return e.name
    if isinstance(e, A.Call):
        return call(e)
    raise TypeError(f"fmt has no case for {type(e).__name__}")


def call(c: A.Call) -> str:
    return f"{c.func.value}({', '.join(arg(a) for a in c.args)})"


_LOOKS_NAMED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=(?!=)")


def arg(a: A.Arg) -> str:
    if a.name:
        return f"{a.name.value}={expr(a.value)}"
    text = expr(a.value)
    # `f(a = b)` reads as a named argument: a positional comparison keeps its parentheses.
    return f"({text})" if _LOOKS_NAMED.match(text) else text


def _head_and_body(s: A.Statement, pad: int) -> tuple[str, str]:
    """A statement as (head, body) so runs of definitions can align their '='."""
    if isinstance(s, A.Labels):
        return "labels", ", ".join(n.value for n in s.names)
    if isinstance(s, A.Embedding):
        return f"embedding {s.name.value.ljust(pad)} =", call(s.provider)
    if isinstance(s, A.Projection):
        return f"projection {s.name.value.ljust(pad)} =", call(s.method)
    if isinstance(s, A.Anchors):
        return f"anchors {s.name.value.ljust(pad)} =", ", ".join(quote(k.value) for k in s.keys)
    if isinstance(s, A.Let):
        return f"let {s.name.value.ljust(pad)} =", expr(s.expr)
    if isinstance(s, A.Slice):
        return f"slice {s.name.value.ljust(pad)} =", expr(s.expr)
    if isinstance(s, A.Clusters):
        params = f"({', '.join(arg(a) for a in s.params)})" if s.params else ""
        defs = ", ".join(f"{c.name.value} = {call(c.namer)}" for c in s.clusters)
        return f"clusters {s.projection.value}{params}:", defs
    if isinstance(s, A.Import):
        return "import", quote(s.path.value)
    if isinstance(s, A.Expect):
        names = [n.value for n in (s.label, s.route) if n is not None]
        return "expect", expr(s.expr) + (f" -> {' '.join(names)}" if names else "")
    if isinstance(s, A.Rule):
        name = f"rule {s.name.value}: " if s.name else ""
        return f"{name}{s.label.value} IF", expr(s.condition)
    raise TypeError(f"fmt has no case for {type(s).__name__}")


def statement(s: A.Statement, pad: int = 0) -> list[str]:
    """The lines of one statement (several when a long condition is broken up)."""
    head, body = _head_and_body(s, pad)
    tail = f" -> {s.route.value.lower()}" if isinstance(s, A.Rule) else ""
    line = f"{head} {body}{tail}"
    if isinstance(s, A.Clusters) and len(line) > MAX_WIDTH and len(s.clusters) > 1:
        defs = [f"{c.name.value} = {call(c.namer)}" for c in s.clusters]
        return [f"{head} {defs[0]},"] + [f"{INDENT}{d}," for d in defs[1:-1]] + [f"{INDENT}{defs[-1]}"]
    cond = s.condition if isinstance(s, A.Rule) else s.expr if isinstance(s, A.Let | A.Slice) else None
    if len(line) <= MAX_WIDTH or not isinstance(cond, A.And | A.Or):
        return [line]
    word, need = ("AND", _PREC_NOT) if isinstance(cond, A.And) else ("OR", _PREC_AND)
    parts = [expr(o, need) for o in cond.operands]
    lines = [f"{head} {parts[0]}"] + [f"{INDENT}{word} {p}" for p in parts[1:]]
    lines[-1] += tail
    return lines


_ALIGNED = (A.Let, A.Anchors, A.Embedding, A.Projection, A.Slice)


@dataclass
class _Item:
    start: int
    end: int
    order: float
    stmt: A.Statement | None = None
    comment: str | None = None
    trailing: str | None = None


def format_module(module: A.Module, text: str) -> str:
    """Lay out a parsed module (``text`` is its source, used to find blank lines)."""
    src_lines = text.split("\n")  # lines as the lexer counts them (only \n ends one)
    items: list[_Item] = []
    by_end: dict[int, _Item] = {}
    for s in module.statements:
        item = _Item(s.span.line, s.span.end_line, s.span.line, stmt=s)
        items.append(item)
        by_end[s.span.end_line] = item
    for c in module.comments:
        line = c.span.line
        owner = by_end.get(line) if c.trailing else None
        if owner is not None:
            owner.trailing = c.text
            continue
        inside = next((i for i in items if i.stmt is not None and i.start <= line <= i.end), None)
        if inside is not None:
            # A comment inside a broken-up statement moves just above it.
            items.append(_Item(inside.start, inside.start, inside.start - 0.5 + line * 1e-6, comment=c.text))
        else:
            items.append(_Item(line, line, line, comment=c.text))
    items.sort(key=lambda i: i.order)

    def blank_between(a: _Item, b: _Item) -> bool:
        return any(not src_lines[k - 1].strip() for k in range(a.end + 1, b.start) if 0 < k <= len(src_lines))

    # Runs of consecutive same-kind definitions share one '=' column.
    pads: dict[int, int] = {}
    run: list[_Item] = []

    def close_run() -> None:
        if run:
            width = max(len(_def_name(i.stmt)) for i in run if i.stmt is not None)
            for i in run:
                pads[id(i)] = width
        run.clear()

    prev: _Item | None = None
    for item in items:
        same = (
            item.stmt is not None
            and isinstance(item.stmt, _ALIGNED)
            and run
            and prev is not None
            and not blank_between(prev, item)
            and type(run[-1].stmt) is type(item.stmt)
        )
        if not same:
            close_run()
        if item.stmt is not None and isinstance(item.stmt, _ALIGNED):
            run.append(item)
        prev = item
    close_run()

    out: list[str] = []
    prev = None
    for item in items:
        if prev is not None and blank_between(prev, item):
            out.append("")
        if item.comment is not None:
            out.append(item.comment)
        else:
            assert item.stmt is not None
            lines = statement(item.stmt, pads.get(id(item), 0))
            if item.trailing:
                lines[-1] += "  " + item.trailing
            out.extend(lines)
        prev = item
    return "\n".join(out) + "\n" if out else ""


def _def_name(s: A.Statement | None) -> str:
    name = getattr(s, "name", None)
    return name.value if isinstance(name, A.Name) else ""
