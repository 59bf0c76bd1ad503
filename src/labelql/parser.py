"""Source text -> syntax tree (:mod:`labelql.ast`), with positions and caret errors.

The grammar is ``grammar/labelql.lark``.  Parsing goes:

1. lex the whole file with the grammar's terminals (one compiled regular expression built from
   Lark's terminal definitions, so the grammar stays the single source of truth); a bad character
   is reported and the rest of its line dropped;
2. turn names that spell a keyword (any case) into that keyword;
3. split the tokens into statements at line ends (a deeper-indented line continues a statement);
4. parse each statement on its own with Lark's LALR parser, building the AST directly in the
   parser's callbacks (no intermediate parse tree).

A broken statement is reported and the next one is still parsed, so one run reports every syntax
error in a file.  No Lark exception ever leaves this module.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.resources
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lark import Lark

from labelql import ast as A
from labelql.diagnostics import Diagnostic, DiagnosticError, LabelQLError, SourceMap, Span, did_you_mean

KEYWORDS = frozenset(
    {
        "LABELS",
        "EMBEDDING",
        "PROJECTION",
        "CLUSTERS",
        "ANCHORS",
        "LET",
        "RULE",
        "SLICE",
        "IMPORT",
        "EXPECT",
        "IF",
        "AND",
        "OR",
        "NOT",
        "BETWEEN",
        "IN",
        "INTERVAL",
    }
)
STATEMENT_KEYWORDS = (
    "labels",
    "embedding",
    "projection",
    "clusters",
    "anchors",
    "let",
    "rule",
    "slice",
    "import",
    "expect",
)
_STATEMENT_KW_TYPES = frozenset(k.upper() for k in STATEMENT_KEYWORDS)
_PUNCTUATION = frozenset({"LPAR", "RPAR", "COMMA", "COLON", "EQ", "ARROW"})
MAX_ERRORS = 20

_TERMINAL_TEXT = {
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "COLON": "':'",
    "EQ": "'='",
    "ARROW": "'->'",
    "COMP_OP": "a comparison (=, !=, <, <=, >, >=)",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "$END": "end of statement",
}
_EXPR_START = {"NAME", "NUMBER", "STRING", "LPAR", "NOT", "INTERVAL", "ADD_OP"}


class Token:
    """One lexed token: a grammar terminal (keywords already resolved) and where it stands.

    Lines and columns are 1-based, ``end_col`` one past the last character, as Lark counts.
    """

    __slots__ = ("col", "end", "end_col", "end_line", "line", "start", "type", "value")

    def __init__(
        self, type: str, value: str, start: int, line: int, col: int, end_line: int, end_col: int, end: int
    ) -> None:
        self.type = type
        self.value = value
        self.start = start
        self.line = line
        self.col = col
        self.end_line = end_line
        self.end_col = end_col
        self.end = end

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Token({self.type}, {self.value!r}, {self.line}:{self.col})"

    def span(self, file: str) -> Span:
        return Span(file, self.line, self.col, self.end_line, self.end_col, self.start, self.end)


def grammar_text() -> str:
    """The grammar shipped in the wheel, or the repository's copy in a source checkout."""
    try:
        res = importlib.resources.files("labelql").joinpath("grammar/labelql.lark")
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        pass
    repo_copy = Path(__file__).resolve().parents[2] / "grammar" / "labelql.lark"
    return repo_copy.read_text(encoding="utf-8")


class _Builder:
    """Builds AST nodes in the LALR parser's callbacks (one method per grammar rule or alias).

    ``file`` is set by :func:`parse_module` before each file is parsed.  Every grammar rule must have
    a method: :func:`lark_parser` checks this when it builds the parser, so no rule is ever silently
    turned into a generic tree.
    """

    file = "<string>"

    # spans
    def _s(self, c: list[Any]) -> Span:
        first, last = c[0], c[-1]
        if first is None or last is None:
            items = [x for x in c if x is not None]
            first, last = items[0], items[-1]
        if not isinstance(first, Token):
            first = _span_of(self.file, first)
        if not isinstance(last, Token):
            last = _span_of(self.file, last)
        return Span(self.file, first.line, first.col, last.end_line, last.end_col, first.start, last.end)

    @staticmethod
    def _nodes(c: list[Any]) -> list[Any]:
        return [x for x in c if not (isinstance(x, Token) and x.type in _PUNCTUATION)]

    def statement(self, c: list[Any]) -> Any:
        return c[0]

    def labels_stmt(self, c: list[Any]) -> A.Labels:
        return A.Labels(tuple(self._nodes(c)[1:]), span=self._s(c))

    def embedding_stmt(self, c: list[Any]) -> A.Embedding:
        n = self._nodes(c)
        return A.Embedding(n[1], n[2], span=self._s(c))

    def projection_stmt(self, c: list[Any]) -> A.Projection:
        n = self._nodes(c)
        return A.Projection(n[1], n[2], span=self._s(c))

    def clusters_stmt(self, c: list[Any]) -> A.Clusters:
        n = self._nodes(c)
        return A.Clusters(n[1], n[2] if n[2] is not None else (), tuple(n[3:]), span=self._s(c))

    def cluster_params(self, c: list[Any]) -> tuple[A.Arg, ...]:
        n = self._nodes(c)
        return n[0] if n and n[0] is not None else ()

    def cluster_def(self, c: list[Any]) -> A.ClusterDef:
        n = self._nodes(c)
        return A.ClusterDef(n[0], n[1], span=self._s(c))

    def anchors_stmt(self, c: list[Any]) -> A.Anchors:
        n = self._nodes(c)
        return A.Anchors(n[1], tuple(n[2:]), span=self._s(c))

    def let_stmt(self, c: list[Any]) -> A.Let:
        n = self._nodes(c)
        return A.Let(n[1], n[2], span=self._s(c))

    def rule_stmt(self, c: list[Any]) -> A.Rule:
        at_if = next(i for i, x in enumerate(c) if isinstance(x, Token) and x.type == "IF")
        label, cond, route = c[at_if - 1], c[at_if + 1], c[-1]
        name = c[1] if isinstance(c[0], Token) and c[0].type == "RULE" else None
        # Routes are words of the language, so case-insensitive like its keywords.
        route = A.Name(route.value.lower(), span=route.span)
        return A.Rule(name, label, cond, route, span=self._s(c))

    def slice_stmt(self, c: list[Any]) -> A.Slice:
        n = self._nodes(c)
        return A.Slice(n[1], n[2], span=self._s(c))

    def import_stmt(self, c: list[Any]) -> A.Import:
        return A.Import(c[1], span=self._s(c))

    def expect_stmt(self, c: list[Any]) -> A.Expect:
        n = [x for x in self._nodes(c)[1:] if x is not None]
        label = n[1] if len(n) > 1 else None
        route = n[2] if len(n) > 2 else None
        return A.Expect(n[0], label, route, span=self._s(c))

    def _chain(self, c: list[Any], cls: type[A.And] | type[A.Or]) -> A.Expr:
        operands: list[A.Expr] = []
        for x in c[::2]:
            # (a AND b) AND c and a AND (b AND c) mean the same: keep one flat form.
            operands.extend(x.operands if isinstance(x, cls) else (x,))
        return cls(tuple(operands), span=self._s(c))

    def or_expr(self, c: list[Any]) -> A.Expr:
        return self._chain(c, A.Or)

    def and_expr(self, c: list[Any]) -> A.Expr:
        return self._chain(c, A.And)

    def not_expr(self, c: list[Any]) -> A.Not:
        return A.Not(c[1], span=self._s(c))

    def cmp_op(self, c: list[Any]) -> Token:
        return c[0]

    def compare(self, c: list[Any]) -> A.Compare:
        op = str(c[1])
        return A.Compare("!=" if op == "<>" else op, c[0], c[2], span=self._s(c))

    def between(self, c: list[Any]) -> A.Between:
        operand, neg, _b, low, _and, high = c
        return A.Between(operand, low, high, negated=neg is not None, span=self._s(c))

    def in_list(self, c: list[Any]) -> A.InList:
        n = self._nodes(c)
        return A.InList(n[0], tuple(n[3:]), negated=n[1] is not None, span=self._s(c))

    def _binary(self, c: list[Any]) -> A.Expr:
        left = c[0]
        for i in range(1, len(c), 2):
            right = c[i + 1]
            left = A.BinOp(str(c[i]), left, right, span=left.span.cover(right.span))
        return left

    def sum(self, c: list[Any]) -> A.Expr:
        return self._binary(c)

    def product(self, c: list[Any]) -> A.Expr:
        return self._binary(c)

    def unary(self, c: list[Any]) -> A.Expr:
        op, operand = str(c[0]), c[1]
        if isinstance(operand, A.Number):
            # -0.5 is a number, not an operation on one: fold it so fmt and the checker see a literal.
            value = -operand.value if op == "-" else operand.value
            text = ("-" + operand.text) if op == "-" else operand.text
            if text.startswith("--"):
                text = text[2:]
            return A.Number(value, text, span=self._s(c))
        return A.Unary(op, operand, span=self._s(c))

    def atom(self, c: list[Any]) -> A.Expr:
        return c[1]  # "(" expr ")"

    def number(self, c: list[Any]) -> A.Number:
        return A.Number(float(c[0].value), c[0].value, span=self._s(c))

    def string(self, c: list[Any]) -> A.String:
        return A.String(_unescape(str(c[0])), span=self._s(c))

    def interval(self, c: list[Any]) -> A.Interval:
        return A.Interval(c[1], span=self._s(c))

    def call(self, c: list[Any]) -> A.Call:
        n = self._nodes(c)
        return A.Call(n[0], tuple(n[1] or ()) if len(n) > 1 else (), span=self._s(c))

    def args(self, c: list[Any]) -> tuple[A.Arg, ...]:
        return tuple(self._nodes(c))

    def named_arg(self, c: list[Any]) -> A.Arg:
        n = self._nodes(c)
        return A.Arg(n[0], n[1], span=self._s(c))

    def positional_arg(self, c: list[Any]) -> A.Arg:
        return A.Arg(None, c[0], span=self._s(c))

    def name(self, c: list[Any]) -> A.Name:
        return A.Name(str(c[0]), span=self._s(c))

    def ident(self, c: list[Any]) -> A.Ident:
        return A.Ident(c[0].value, span=c[0].span)  # c[0] is a Name node


def _span_of(file: str, x: Any) -> Span:
    if isinstance(x, Token):
        return x.span(file)
    if isinstance(x, tuple):  # args / cluster params
        return _span_of(file, x[0]).cover(_span_of(file, x[-1]))
    return x.span


_BUILDER = _Builder()


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser, built once per process, with the AST builder as its callbacks."""
    lark = Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        start="statement",
        keep_all_tokens=True,
        maybe_placeholders=True,
        transformer=_BUILDER,
        cache=True,  # Lark keeps the LALR analysis in a temp file: later processes start faster
    )
    # A '?rule' alternative with one item is inlined by Lark and never reaches a callback.
    missing = sorted(
        {
            str(r.alias or r.origin.name)
            for r in lark.rules
            if not (r.options.expand1 and len(r.expansion) == 1 and not r.alias)
            and not str(r.alias or r.origin.name).startswith("_")
            and not hasattr(_Builder, str(r.alias or r.origin.name))
        }
    )
    if missing:
        raise RuntimeError(
            f"LabelQL's AST builder has no case for grammar rules: {', '.join(map(str, missing))}"
        )
    return lark


@functools.cache
def _scanner() -> re.Pattern[str]:
    """One regular expression for all terminals, in Lark's own order of preference.

    Blanks (the grammar's WS) are skipped as a prefix of every match rather than matched as tokens of
    their own: half as many matches, and the parser never sees them anyway.
    """
    terms = sorted(
        (t for t in lark_parser().terminals if t.name != "WS"),
        key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
    )
    blank = next(t for t in lark_parser().terminals if t.name == "WS").pattern.to_regexp()
    return re.compile(
        f"(?:{blank})?(?:" + "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terms) + ")"
    )


# -- tokens --------------------------------------------------------------------------------------
def tokenize(text: str, file: str) -> tuple[list[Token], list[Diagnostic], set[int]]:
    """All tokens of ``text`` except blanks (comments and line ends included), the lexing errors,
    and the lines those errors poisoned."""
    scan = _scanner().match
    diags: list[Diagnostic] = []
    bad_lines: set[int] = set()
    toks: list[Token] = []
    append = toks.append
    pos, line, line_start, n = 0, 1, 0, len(text)
    while pos < n:
        m = scan(text, pos)
        if m is None:
            pos += len(text[pos:]) - len(text[pos:].lstrip(" \t\f"))  # blanks before the bad spot
            if pos >= n:
                break
            col = pos - line_start + 1
            diags.append(_lex_error(text[pos], Span(file, line, col, line, col + 1, pos, pos + 1)))
            bad_lines.add(line)
            nl = text.find("\n", pos)
            pos = n if nl < 0 else nl  # drop the rest of the line; the newline is lexed normally
            if len(diags) >= MAX_ERRORS:
                break
            continue
        typ = m.lastgroup
        assert typ is not None
        start, end = m.span(typ)
        value = text[start:end]
        if typ == "NL":
            nl_at = value.rfind("\n")
            append(
                Token("NL", value, start, line, start - line_start + 1, line + 1, end - (start + nl_at), end)
            )
            line += 1
            line_start = start + nl_at + 1
        else:
            if typ == "NAME" and value.upper() in KEYWORDS:
                typ = value.upper()
            col = start - line_start + 1
            append(Token(typ, value, start, line, col, line, col + end - start, end))
        pos = end
    return _names_before_parens(toks), diags, bad_lines


def _names_before_parens(toks: list[Token]) -> list[Token]:
    """A statement keyword followed by '(' is a function name (``anchors(dog_examples)``):
    no statement keyword is ever followed by '(' in the grammar, so this is unambiguous."""
    for i in range(len(toks) - 1):
        t = toks[i]
        if t.type in _STATEMENT_KW_TYPES and toks[i + 1].type == "LPAR":
            t.type = "NAME"
    return toks


def _lex_error(ch: str, span: Span) -> Diagnostic:
    if ch in "\"'":
        return Diagnostic(
            "error", "unterminated string", span, f"close it with {ch} on the same line", code="syntax"
        )
    hints = {
        "&": "use AND",
        "|": "use OR",
        "!": "use != or NOT",
        "[": "lists are written ( ... )",
        "{": "LabelQL has no braces",
        ";": "statements end at the end of the line",
    }
    return Diagnostic("error", f"unexpected character {ch!r}", span, hints.get(ch), code="syntax")


# -- statements ----------------------------------------------------------------------------------
def split_statements(toks: list[Token]) -> Iterator[list[Token]]:
    """Group tokens into statements: a line ending closes a statement unless the next line is
    indented deeper than the statement's first line (then it continues the statement)."""
    current: list[Token] = []
    indent = 0
    pending_nl: Token | None = None
    for t in toks:
        typ = t.type
        if typ == "COMMENT":
            continue
        if typ == "NL":
            pending_nl = t
            continue
        if pending_nl is not None:
            if current and len(pending_nl.value) - pending_nl.value.rfind("\n") - 1 <= indent:
                yield current
                current = []
            pending_nl = None
        if not current:
            indent = t.col - 1
        current.append(t)
    if current:
        yield current


def _comments(toks: list[Token], file: str) -> tuple[A.Comment, ...]:
    code_lines = {t.line for t in toks if t.type not in ("COMMENT", "NL")}
    return tuple(
        A.Comment(t.value.rstrip(), trailing=t.line in code_lines, span=_span_of(file, t))
        for t in toks
        if t.type == "COMMENT"
    )


class _SyntaxError(Exception):
    def __init__(self, token: Token, expected: set[str]) -> None:
        super().__init__(str(token))
        self.token = token
        self.expected = expected


@functools.cache
def _lalr_tables() -> tuple[dict[int, dict[str, tuple[bool, Any]]], int, int]:
    """Lark's LALR table for ``statement``, re-keyed by plain strings for a lean driver loop.

    Lark's generic loop hashes ``Rule`` and ``Token`` objects on every step; with plain keys the
    same table runs about twice as fast (a 2,000-rule policy checks in well under a second).
    """
    from lark.parsers.lalr_analysis import Shift

    inner = lark_parser().parser.parser.parser
    table = inner.parse_table
    states: dict[int, dict[str, tuple[bool, Any]]] = {}
    for state, actions in table.states.items():
        row: dict[str, tuple[bool, Any]] = {}
        for symbol, (action, arg) in actions.items():
            if action is Shift:
                row[str(symbol)] = (True, arg)
            else:
                # '?rule: child' alternatives hand their one child up unchanged: no call needed.
                identity = arg.options.expand1 and len(arg.expansion) == 1 and not arg.alias
                callback = None if identity else inner.callbacks[arg]
                row[str(symbol)] = (False, (len(arg.expansion), callback, str(arg.origin.name)))
        states[state] = row
    return states, table.start_states["statement"], table.end_states["statement"]


def _accepts(
    states: dict[int, dict[str, tuple[bool, Any]]], stack: list[int], typ: str, end_state: int
) -> bool:
    """Whether terminal ``typ`` could come next: replay the reductions it would cause on a copy
    of the stack (LALR rows list more terminals than can really follow, for the error message)."""
    stack = list(stack)
    while True:
        step = states[stack[-1]].get(typ)
        if step is None:
            return False
        if step[0]:
            return True
        size, _callback, origin = step[1]
        if size:
            del stack[-size:]
        stack.append(states[stack[-1]][origin][1])
        if typ == "$END" and stack[-1] == end_state:
            return True


def parse_statement(stmt: list[Token]) -> A.Statement:
    """Parse one statement's tokens with Lark's LALR table; raises :class:`_SyntaxError`."""
    states, state, end_state = _lalr_tables()
    state_stack = [state]
    value_stack: list[Any] = []
    last = stmt[-1]
    eof = Token("$END", "", last.end, last.end_line, last.end_col, last.end_line, last.end_col, last.end)
    for tok in (*stmt, eof):
        typ = tok.type
        while True:
            row = states[state_stack[-1]]
            step = row.get(typ)
            if step is None:
                expected = {k for k in row if k.isupper() and _accepts(states, state_stack, k, end_state)}
                raise _SyntaxError(tok, expected)
            if step[0]:
                state_stack.append(step[1])
                value_stack.append(tok)
                break
            size, callback, origin = step[1]
            if callback is None:
                del state_stack[-1]  # the child stays on the value stack as the result
            else:
                if size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    children = []
                value_stack.append(callback(children))
            state_stack.append(states[state_stack[-1]][origin][1])
            if typ == "$END" and state_stack[-1] == end_state:
                result: A.Statement = value_stack[-1]
                return result
    raise AssertionError("unreachable: $END always reduces or raises")  # pragma: no cover


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: parsing allocates many small objects that all stay alive,
    and the collector would rescan them again and again for nothing (a third of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_module(text: str, file: str) -> tuple[A.Module, list[Diagnostic]]:
    """Parse a whole file; returns the statements that parsed and every syntax diagnostic."""
    with no_gc():
        return _parse_module(text, file)


def _parse_module(text: str, file: str) -> tuple[A.Module, list[Diagnostic]]:
    lark_parser()
    toks, diags, bad_lines = tokenize(text, file)
    _BUILDER.file = file
    statements: list[A.Statement] = []
    for stmt in split_statements(toks):
        if bad_lines and any(t.line in bad_lines for t in stmt):
            continue
        if len(diags) >= MAX_ERRORS:
            break
        try:
            statements.append(parse_statement(stmt))
        except _SyntaxError as e:
            diags.append(_parse_error(e, stmt, file))
    diags.sort(key=lambda d: d.span.start if d.span else 0)
    span = Span(file, 1, 1, 1, 1, 0, len(text))
    return A.Module(file=file, statements=tuple(statements), comments=_comments(toks, file), span=span), diags


def parse(text: str, file: str = "<string>") -> A.Module:
    """Parse ``text``; raise :class:`DiagnosticError` listing every syntax error."""
    module, diags = parse_module(text, file)
    if diags:
        sources = SourceMap()
        sources.add(file, text)
        raise DiagnosticError(diags, sources)
    return module


def _describe(t: Token) -> str:
    if t.type == "$END":
        return "end of statement"
    if t.type in KEYWORDS:
        return f"keyword {t.value.upper()}"
    if t.type == "NAME":
        return f"name '{t.value}'"
    if t.type == "STRING":
        return f"string {t.value}"
    if t.type == "NUMBER":
        return f"number {t.value}"
    return f"'{t.value}'"


def _expected_text(expected: set[str]) -> str | None:
    exp = set(expected)
    if exp >= _EXPR_START:
        exp = (exp - _EXPR_START) | {"<expr>"}
    names = sorted("an expression" if e == "<expr>" else _TERMINAL_TEXT.get(e, e) for e in exp)
    if not names or len(names) > 4:
        return None
    return f"expected {names[0]}" if len(names) == 1 else "expected one of: " + ", ".join(names)


def _parse_error(e: _SyntaxError, stmt: list[Token], file: str) -> Diagnostic:
    tok = e.token
    if tok.type == "$END":
        last = _span_of(file, stmt[-1])
        span = Span(
            file, last.end_line, last.end_col, last.end_line, last.end_col + 1, last.end, last.end + 1
        )
    else:
        span = _span_of(file, tok)
    expected = set(e.expected)
    idx = next((i for i, t in enumerate(stmt) if t is tok), None)
    message = f"unexpected {_describe(tok)}"
    hint = None
    keyword_candidates = [k for k in expected if k in KEYWORDS]
    if tok.type == "NAME" and keyword_candidates:
        close = did_you_mean(tok.value, keyword_candidates)
        hint = close.replace(close[close.index("'") :], close[close.index("'") :].upper()) if close else None
    if hint is None and idx == 1 and stmt[0].type == "NAME":
        close = did_you_mean(stmt[0].value, STATEMENT_KEYWORDS)
        if close:
            hint, span, message = close, _span_of(file, stmt[0]), f"unknown statement '{stmt[0].value}'"
    if hint is None and tok.type == "$END" and "ARROW" in expected:
        hint = "a rule ends with '-> done' or '-> review'"
    if hint is None and tok.type == "$END" and "RPAR" in expected:
        hint = "a '(' is not closed"
    if hint is None and tok.type == "EQ" and idx and stmt[idx - 1].type == "EQ":
        hint = "equality is a single '='"
    if hint is None:
        hint = _expected_text(expected)
    return Diagnostic("error", message, span, hint, code="syntax")


def _unescape(raw: str) -> str:
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out = []
    it = iter(body)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def read_source(path: str | Path) -> str:
    """Read a policy file, turning OS errors into LabelQL errors."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelQLError(f"no such policy file: {p}") from None
    except IsADirectoryError:
        raise LabelQLError(f"{p} is a folder, not a policy file") from None
    except UnicodeDecodeError as e:
        raise LabelQLError(f"{p} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise LabelQLError(f"cannot read {p}: {e.strerror}") from None
