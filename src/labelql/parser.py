"""Source text -> syntax tree (:mod:`labelql.ast`), with positions and caret errors.

The grammar is ``grammar/labelql.lark``.  Parsing goes: lex the whole file (a bad character is
reported and the rest of its line dropped), turn keyword-spelling names into keywords, split the
tokens into statements at line ends, then parse each statement on its own with Lark's LALR parser.
A broken statement is reported and the next one is still parsed, so one run reports every syntax
error in a file.  No Lark exception ever leaves this module.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from labelql import ast as A
from labelql.diagnostics import Diagnostic, DiagnosticError, SourceMap, Span, did_you_mean

KEYWORDS = frozenset(
    {"LABELS", "EMBEDDING", "PROJECTION", "CLUSTERS", "ANCHORS", "LET", "RULE", "SLICE", "IMPORT",
     "IF", "AND", "OR", "NOT", "BETWEEN", "IN", "INTERVAL"}
)
STATEMENT_KEYWORDS = ("labels", "embedding", "projection", "clusters", "anchors", "let", "rule", "slice", "import")
_STATEMENT_KW_TYPES = frozenset(k.upper() for k in STATEMENT_KEYWORDS)
MAX_ERRORS = 20

_TERMINAL_TEXT = {
    "NAME": "a name", "STRING": "a string", "NUMBER": "a number", "LPAR": "'('", "RPAR": "')'",
    "COMMA": "','", "COLON": "':'", "EQ": "'='", "ARROW": "'->'",
    "COMP_OP": "a comparison (=, !=, <, <=, >, >=)", "ADD_OP": "'+' or '-'", "MUL_OP": "'*' or '/'",
    "$END": "end of statement",
}
_EXPR_START = {"NAME", "NUMBER", "STRING", "LPAR", "NOT", "INTERVAL", "ADD_OP"}


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


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser, built once per process."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        start="statement",
        propagate_positions=True,
        maybe_placeholders=True,
    )


# -- tokens --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tok:
    """A token with its span; ``type`` is a grammar terminal (keywords already resolved)."""

    type: str
    value: str
    span: Span
    raw: Token


def _span(file: str, t: Token) -> Span:
    return Span(file, t.line or 0, t.column or 0, t.end_line or 0, t.end_column or 0,
                t.start_pos or 0, t.end_pos or 0)


def tokenize(text: str, file: str) -> tuple[list[Tok], list[Diagnostic], set[int]]:
    """All tokens of ``text`` (whitespace dropped), lexing errors, and the lines they poisoned."""
    lark = lark_parser()
    diags: list[Diagnostic] = []
    bad_lines: set[int] = set()
    work = text
    while True:
        toks: list[Tok] = []
        try:
            for t in lark.lex(work, dont_ignore=True):
                if t.type == "WS":
                    continue
                typ = t.type
                if typ == "NAME" and t.value.upper() in KEYWORDS:
                    typ = t.value.upper()
                    t = Token(typ, t.value, t.start_pos, t.line, t.column, t.end_line, t.end_column, t.end_pos)
                toks.append(Tok(typ, t.value, _span(file, t), t))
            return _names_before_parens(toks), diags, bad_lines
        except UnexpectedCharacters as e:
            diags.append(_lex_error(e, work, file))
            bad_lines.add(e.line)
            end = work.find("\n", e.pos_in_stream)
            end = len(work) if end < 0 else end
            work = work[: e.pos_in_stream] + " " * (end - e.pos_in_stream) + work[end:]
            if len(diags) >= MAX_ERRORS:
                return toks, diags, bad_lines


def _names_before_parens(toks: list[Tok]) -> list[Tok]:
    """A statement keyword followed by '(' is a function name (``anchors(dog_examples)``):
    no statement keyword is ever followed by '(' in the grammar, so this is unambiguous."""
    out = list(toks)
    for i, t in enumerate(toks[:-1]):
        if t.type in _STATEMENT_KW_TYPES and toks[i + 1].type == "LPAR":
            raw = t.raw
            out[i] = Tok("NAME", t.value, t.span, Token("NAME", t.value, raw.start_pos, raw.line, raw.column,
                                                        raw.end_line, raw.end_column, raw.end_pos))
    return out


def _lex_error(e: UnexpectedCharacters, text: str, file: str) -> Diagnostic:
    ch = text[e.pos_in_stream]
    span = Span(file, e.line, e.column, e.line, e.column + 1, e.pos_in_stream, e.pos_in_stream + 1)
    if ch in "\"'":
        return Diagnostic("error", "unterminated string", span, f"close it with {ch} on the same line",
                          code="syntax")
    hints = {"&": "use AND", "|": "use OR", "!": "use != or NOT", "[": "lists are written ( ... )",
             "{": "LabelQL has no braces", ";": "statements end at the end of the line"}
    return Diagnostic("error", f"unexpected character {ch!r}", span, hints.get(ch), code="syntax")


# -- statements ----------------------------------------------------------------------------------
def split_statements(toks: list[Tok]) -> Iterator[list[Tok]]:
    """Group tokens into statements: a line ending closes a statement unless the next line is
    indented deeper than the statement's first line (then it continues the statement)."""
    current: list[Tok] = []
    indent = 0
    pending_nl: Tok | None = None
    for t in toks:
        if t.type == "COMMENT":
            continue
        if t.type == "NL":
            pending_nl = t
            continue
        if pending_nl is not None:
            next_indent = len(pending_nl.value.lstrip("\r\n"))
            if current and next_indent <= indent:
                yield current
                current = []
            pending_nl = None
        if not current:
            indent = t.span.col - 1
        current.append(t)
    if current:
        yield current


def _comments(toks: list[Tok]) -> tuple[A.Comment, ...]:
    out = []
    code_lines = {t.span.line for t in toks if t.type not in ("COMMENT", "NL")}
    for t in toks:
        if t.type == "COMMENT":
            out.append(A.Comment(t.value.rstrip(), trailing=t.span.line in code_lines, span=t.span))
    return tuple(out)


def parse_statement(stmt: list[Tok], file: str) -> A.Statement:
    """Parse one statement's tokens (raises UnexpectedInput / VisitError, handled by the caller)."""
    ip = lark_parser().parse_interactive(start="statement")
    for t in stmt:
        ip.feed_token(t.raw)
    tree = ip.feed_eof(stmt[-1].raw)
    result: A.Statement = _Builder(file).transform(tree)
    return result


def parse_module(text: str, file: str) -> tuple[A.Module, list[Diagnostic]]:
    """Parse a whole file; returns the statements that parsed and every syntax diagnostic."""
    toks, diags, bad_lines = tokenize(text, file)
    statements: list[A.Statement] = []
    for stmt in split_statements(toks):
        if any(t.span.line in bad_lines for t in stmt):
            continue
        if len(diags) >= MAX_ERRORS:
            break
        try:
            statements.append(parse_statement(stmt, file))
        except UnexpectedToken as e:
            diags.append(_parse_error(e, stmt, file))
        except UnexpectedInput as e:  # pragma: no cover - every LALR error is an UnexpectedToken
            diags.append(Diagnostic("error", f"syntax error: {e}", stmt[0].span, code="syntax"))
        except VisitError as e:
            if isinstance(e.orig_exc, _BuildError):
                diags.append(e.orig_exc.diagnostic)
            else:
                raise
    span = Span(file, 1, 1, 1, 1, 0, len(text))
    diags.sort(key=lambda d: (d.span.start if d.span else 0))
    return A.Module(file=file, statements=tuple(statements), comments=_comments(toks), span=span), diags


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
    if _EXPR_START <= exp:
        exp = (exp - _EXPR_START) | {"<expr>"}
    names = sorted(
        "an expression" if e == "<expr>" else _TERMINAL_TEXT.get(e, e) for e in exp
    )
    if not names or len(names) > 4:
        return None
    return f"expected {names[0]}" if len(names) == 1 else "expected one of: " + ", ".join(names)


def _parse_error(e: UnexpectedToken, stmt: list[Tok], file: str) -> Diagnostic:
    tok = e.token
    if tok.type == "$END":
        last = stmt[-1].span
        span = Span(file, last.end_line, last.end_col, last.end_line, last.end_col + 1, last.end, last.end + 1)
    else:
        span = _span(file, tok)
    expected = set(e.expected)
    idx = next((i for i, t in enumerate(stmt) if t.raw is tok), None)
    message = f"unexpected {_describe(tok)}"
    hint = None
    keyword_candidates = [k for k in expected if k in KEYWORDS]
    if tok.type == "NAME" and keyword_candidates:
        close = did_you_mean(tok.value, keyword_candidates)
        hint = close.replace(close[close.index("'"):], close[close.index("'"):].upper()) if close else None
    if hint is None and idx == 1 and stmt[0].type == "NAME":
        close = did_you_mean(stmt[0].value, STATEMENT_KEYWORDS)
        if close:
            hint, span, message = close, stmt[0].span, f"unknown statement '{stmt[0].value}'"
    if hint is None and tok.type == "$END" and "ARROW" in expected:
        hint = "a rule ends with '-> done' or '-> review'"
    if hint is None and tok.type == "$END" and "RPAR" in expected:
        hint = "a '(' is not closed"
    if hint is None and tok.type == "EQ" and idx and stmt[idx - 1].type == "EQ":
        hint = "equality is a single '='"
    if hint is None:
        hint = _expected_text(expected)
    return Diagnostic("error", message, span, hint, code="syntax")


# -- tree -> AST ---------------------------------------------------------------------------------
class _BuildError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


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


@v_args(meta=True, inline=False)
class _Builder(Transformer[Token, Any]):
    """Lark tree -> frozen AST.  Any rule without a method here is an error, never skipped."""

    def __init__(self, file: str) -> None:
        super().__init__(visit_tokens=False)
        self.file = file

    def _s(self, meta: Any) -> Span:
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)

    def __default__(self, data: Any, children: Any, meta: Any) -> Any:
        raise NotImplementedError(f"LabelQL's tree builder has no case for grammar rule {data!r}")

    def statement(self, meta: Any, c: list[Any]) -> Any:
        return c[0]

    def labels_stmt(self, meta: Any, c: list[Any]) -> A.Labels:
        return A.Labels(tuple(c[1:]), span=self._s(meta))

    def embedding_stmt(self, meta: Any, c: list[Any]) -> A.Embedding:
        return A.Embedding(c[1], c[2], span=self._s(meta))

    def projection_stmt(self, meta: Any, c: list[Any]) -> A.Projection:
        return A.Projection(c[1], c[2], span=self._s(meta))

    def clusters_stmt(self, meta: Any, c: list[Any]) -> A.Clusters:
        params = c[2] if c[2] is not None else ()
        return A.Clusters(c[1], params, tuple(c[3:]), span=self._s(meta))

    def cluster_params(self, meta: Any, c: list[Any]) -> tuple[A.Arg, ...]:
        return c[0] if c[0] is not None else ()

    def cluster_def(self, meta: Any, c: list[Any]) -> A.ClusterDef:
        return A.ClusterDef(c[0], c[1], span=self._s(meta))

    def anchors_stmt(self, meta: Any, c: list[Any]) -> A.Anchors:
        return A.Anchors(c[1], tuple(c[2:]), span=self._s(meta))

    def let_stmt(self, meta: Any, c: list[Any]) -> A.Let:
        return A.Let(c[1], c[2], span=self._s(meta))

    def rule_stmt(self, meta: Any, c: list[Any]) -> A.Rule:
        _rule_kw, name, label, _if, cond, _arrow, route = c
        # Routes are words of the language, so case-insensitive like its keywords.
        route = A.Name(route.value.lower(), span=route.span)
        return A.Rule(name, label, cond, route, span=self._s(meta))

    def slice_stmt(self, meta: Any, c: list[Any]) -> A.Slice:
        return A.Slice(c[1], c[2], span=self._s(meta))

    def import_stmt(self, meta: Any, c: list[Any]) -> A.Import:
        return A.Import(c[1], span=self._s(meta))

    def _chain(self, meta: Any, c: list[Any], cls: type[A.And] | type[A.Or]) -> A.Expr:
        operands: list[A.Expr] = []
        for x in c[::2]:
            # (a AND b) AND c and a AND (b AND c) mean the same: keep one flat form.
            operands.extend(x.operands if isinstance(x, cls) else (x,))
        return cls(tuple(operands), span=self._s(meta))

    def or_expr(self, meta: Any, c: list[Any]) -> A.Expr:
        return self._chain(meta, c, A.Or)

    def and_expr(self, meta: Any, c: list[Any]) -> A.Expr:
        return self._chain(meta, c, A.And)

    def not_expr(self, meta: Any, c: list[Any]) -> A.Not:
        return A.Not(c[1], span=self._s(meta))

    def cmp_op(self, meta: Any, c: list[Any]) -> str:
        op = str(c[0])
        return "!=" if op == "<>" else op

    def compare(self, meta: Any, c: list[Any]) -> A.Compare:
        return A.Compare(c[1], c[0], c[2], span=self._s(meta))

    def between(self, meta: Any, c: list[Any]) -> A.Between:
        operand, neg, _b, low, _and, high = c
        return A.Between(operand, low, high, negated=neg is not None, span=self._s(meta))

    def in_list(self, meta: Any, c: list[Any]) -> A.InList:
        return A.InList(c[0], tuple(c[3:]), negated=c[1] is not None, span=self._s(meta))

    def _binary(self, meta: Any, c: list[Any]) -> A.Expr:
        left = c[0]
        for i in range(1, len(c), 2):
            right = c[i + 1]
            left = A.BinOp(str(c[i]), left, right, span=left.span.cover(right.span))
        return left  # type: ignore[no-any-return]

    def sum(self, meta: Any, c: list[Any]) -> A.Expr:
        return self._binary(meta, c)

    def product(self, meta: Any, c: list[Any]) -> A.Expr:
        return self._binary(meta, c)

    def unary(self, meta: Any, c: list[Any]) -> A.Expr:
        op, operand = str(c[0]), c[1]
        if isinstance(operand, A.Number):
            # -0.5 is a number, not an operation on one: fold it so fmt and the checker see a literal.
            value = -operand.value if op == "-" else operand.value
            text = ("-" + operand.text) if op == "-" else operand.text
            if text.startswith("--"):
                text = text[2:]
            return A.Number(value, text, span=self._s(meta))
        return A.Unary(op, operand, span=self._s(meta))

    def number(self, meta: Any, c: list[Any]) -> A.Number:
        return A.Number(float(c[0]), str(c[0]), span=self._s(meta))

    def string(self, meta: Any, c: list[Any]) -> A.String:
        return A.String(_unescape(str(c[0])), span=self._s(meta))

    def interval(self, meta: Any, c: list[Any]) -> A.Interval:
        return A.Interval(c[1], span=self._s(meta))

    def call(self, meta: Any, c: list[Any]) -> A.Call:
        return A.Call(c[0], tuple(c[1] or ()), span=self._s(meta))

    def args(self, meta: Any, c: list[Any]) -> tuple[A.Arg, ...]:
        return tuple(c)

    def named_arg(self, meta: Any, c: list[Any]) -> A.Arg:
        return A.Arg(c[0], c[1], span=self._s(meta))

    def positional_arg(self, meta: Any, c: list[Any]) -> A.Arg:
        return A.Arg(None, c[0], span=self._s(meta))

    def name(self, meta: Any, c: list[Any]) -> A.Name:
        return A.Name(str(c[0]), span=self._s(meta))

    def ident(self, meta: Any, c: list[Any]) -> A.Ident:
        return A.Ident(c[0].value, span=c[0].span)


def read_source(path: str | Path) -> str:
    """Read a policy file, turning OS errors into LabelQL errors."""
    from labelql.diagnostics import LabelQLError

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
