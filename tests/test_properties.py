"""Property tests: the front end never fails with anything but LabelQL's own error, and fmt keeps meaning."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelql import ast as A
from labelql.checker import check_text
from labelql.diagnostics import LabelQLError
from labelql.formatter import expr as render_expr
from labelql.formatter import format_source
from labelql.parser import _lalr_tables, lark_parser, parse, split_statements, tokenize

FIX = Path(__file__).parent / "fixtures" / "lang"
VALID = [(FIX / n).read_text() for n in ("cats_dogs.lql", "messy.lql", "warnings.lql")]
VALID.append(
    VALID[0] + 'expect coverage(done) >= 0.85\nexpect "cat_vs_dog_3" -> dog done\nexpect "k" -> manual\n'
)
SNIPPETS = [
    "(",
    ")",
    ",",
    "=",
    "->",
    " AND ",
    " OR ",
    "NOT ",
    '"',
    "'",
    "#",
    "\n",
    "\n    ",
    "0.5",
    "-",
    "text(",
    "cluster(umap)",
    "done",
    "review",
    "let ",
    "labels ",
    "anchors ",
    " BETWEEN ",
    " IN ",
    "interval '1 day'",
    "é",
    "\x00",
    "\t",
    "rule x:",
    "import ",
    "expect ",
    "clusters umap:",
    ">=",
    "==",
    "1e999",
]
# derandomize: CI runs the same examples every time; larger random searches are run by hand.
FAST = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "dup_line"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(SNIPPETS)) + text[i:]
        elif op == "replace":
            text = text[:i] + draw(st.text(max_size=6)) + text[j:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                k = draw(st.integers(0, len(lines) - 1))
                lines.insert(k, lines[k])
                text = "".join(lines)
    return text


@FAST
@given(mutated())
def test_mutations_raise_only_labelql_errors(text: str) -> None:
    try:
        check_text(text, "m.lql")
    except LabelQLError as e:
        rendered = e.render()
        assert rendered and "Traceback" not in rendered
    try:
        out = format_source(text, "m.lql")
    except LabelQLError:
        return
    assert format_source(out, "m.lql") == out
    assert parse(out) == parse(text)


NAMES = st.sampled_from(["a", "b", "high", "cats", "umap", "x1", "clip"])
LEAVES = st.one_of(
    st.builds(lambda n: A.Ident(n), NAMES),
    st.builds(lambda v: A.Number(v, repr(v)), st.floats(0, 10, allow_nan=False).map(lambda f: round(f, 3))),
    st.builds(
        lambda s: A.String(s), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
    ),
    st.builds(lambda s: A.Interval(A.String(s)), st.sampled_from(["7 days", "1 hour"])),
)


def _flat(cls: type, items: list[A.Expr]) -> A.Expr:
    out: list[A.Expr] = []
    for it in items:
        out.extend(it.operands if isinstance(it, cls) else (it,))  # type: ignore[attr-defined]
    return cls(tuple(out))


def _extend(children: st.SearchStrategy[A.Expr]) -> st.SearchStrategy[A.Expr]:
    return st.one_of(
        st.builds(lambda items: _flat(A.And, items), st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda items: _flat(A.Or, items), st.lists(children, min_size=2, max_size=3)),
        st.builds(A.Not, children),
        st.builds(A.Compare, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), children, children),
        st.builds(A.BinOp, st.sampled_from(["+", "-", "*", "/"]), children, children),
        st.builds(lambda o, lo, hi, n: A.Between(o, lo, hi, n), children, children, children, st.booleans()),
        st.builds(
            lambda o, items, n: A.InList(o, tuple(items), n),
            children,
            st.lists(children, min_size=1, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda f, args: A.Call(A.Name(f), tuple(A.Arg(None, a) for a in args)),
            st.sampled_from(["text", "near", "cluster"]),
            st.lists(children, max_size=2),
        ),
        st.builds(lambda o: A.Unary("-", o), children.filter(lambda e: not isinstance(e, A.Number))),
    )


EXPRS = st.recursive(LEAVES, _extend, max_leaves=12)


@FAST
@given(EXPRS)
def test_fmt_of_any_expression_parses_back_to_it(e: A.Expr) -> None:
    text = f"let v = {render_expr(e)}\n"
    stmt = parse(text).statements[0]
    assert isinstance(stmt, A.Let)
    assert stmt.expr == e, text


def test_lean_driver_matches_larks_own_parser() -> None:
    """The lean LALR loop must build exactly what Lark's own parser state builds from the same table."""
    from lark.parsers.lalr_parser_state import ParserState

    from labelql.parser import Token, parse_statement

    lark = lark_parser()
    _lalr_tables()
    conf = lark.parser.parser.parser
    for text in [*VALID, (FIX / "canonical.lql").read_text()]:
        toks, diags, _ = tokenize(text, "d.lql")
        assert not diags
        for stmt in split_statements(toks):
            ps = ParserState(_Conf(conf), None)  # type: ignore[arg-type]
            for t in stmt:
                ps.feed_token(t)
            last = stmt[-1]
            theirs = ps.feed_token(
                Token(
                    "$END", "", last.end, last.end_line, last.end_col, last.end_line, last.end_col, last.end
                ),
                True,
            )
            assert theirs == parse_statement(stmt)


class _Conf:
    def __init__(self, parser: object) -> None:
        table = parser.parse_table  # type: ignore[attr-defined]
        self.states = table.states
        self.start_state = table.start_states["statement"]
        self.end_state = table.end_states["statement"]
        self.callbacks = parser.callbacks  # type: ignore[attr-defined]
        self.start = "statement"
        self.parse_table = table
