"""A Pygments lexer for LQL: highlighting in the REPL, in docs, and in any editor that takes Pygments.

It reads the same word lists as the parser and the checker, so a keyword or function added there is
highlighted here. Register it for ``pygmentize`` with the ``pygments.lexers`` entry point (see
pyproject.toml): ``pygmentize -l lql rules/cats_dogs.lql``.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from labelql.checker import BUILTINS, FUNCTIONS, PROJECTION_KINDS, PROVIDERS
from labelql.parser import KEYWORDS, STATEMENT_KEYWORDS

OPERATOR_WORDS = tuple(sorted(k.lower() for k in KEYWORDS if k.lower() not in STATEMENT_KEYWORDS))
CALLABLES = (*FUNCTIONS, *PROVIDERS, *PROJECTION_KINDS, "anchors")
ROUTES = ("done", "review", "manual")


class LQLLexer(RegexLexer):
    """LabelQL policies (``.lql``) and REPL input."""

    name = "LabelQL"
    aliases = ["lql", "labelql"]  # noqa: RUF012 - Pygments reads these class attributes
    filenames = ["*.lql"]  # noqa: RUF012
    mimetypes = ["text/x-labelql"]  # noqa: RUF012

    tokens = {  # noqa: RUF012
        "root": [
            (r"[ \t\f]+", Whitespace),
            (r"\r?\n", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"(?:[^"\\\n]|\\.)*"', String.Double),
            (r"'(?:[^'\\\n]|\\.)*'", String.Single),
            (r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", Number),
            (r"^:[A-Za-z]+", Keyword.Pseudo),  # a REPL command
            (r"->", Operator),
            (r"(>=|<=|!=|<>|>|<|=|\+|-|\*|/)", Operator),
            (r"[(),:]", Punctuation),
            (r"(?i:\b(?:" + "|".join(STATEMENT_KEYWORDS) + r")\b)(?!\s*\()", Keyword.Declaration),
            (r"(?i:\b(?:" + "|".join(OPERATOR_WORDS) + r")\b)", Operator.Word),
            (r"\b(" + "|".join(CALLABLES) + r")(\s*)(\()", bygroups(Name.Function, Whitespace, Punctuation)),
            (r"\b(?:" + "|".join(BUILTINS) + r")\b", Name.Builtin),
            (r"\b(?:" + "|".join(ROUTES) + r")\b", Name.Constant),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r".", Text),
        ]
    }
