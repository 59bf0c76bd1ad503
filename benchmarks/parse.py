"""Front-end speed: `labelql check` on a 2,000-rule policy (goal: under 1 s), in one run.

Generates a policy from the guide's example (rules of the guide's shape, ~20 tokens each), then times:
the whole `labelql check` command in a fresh process (what a user waits for), and in-process stages
(lex, parse, check) against a baseline: Lark's own LALR loop building its parse tree from the same
tokens and the same grammar (LabelQL runs Lark's table with a lean loop and builds the AST directly).

    python benchmarks/parse.py [--rules 2000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import best  # benchmarks/ is on sys.path when a script runs
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def make_policy(n: int) -> str:
    head = (REPO / "rules" / "cats_dogs.lql").read_text()
    body = []
    for i in range(n):
        lab, other = ("cat", "dog") if i % 2 else ("dog", "cat")
        route = "done" if i % 3 else "review"
        body.append(
            f"rule r{i}: {lab} IF cluster(umap) = {lab}s "
            f'AND text("photo of a {lab} {i}") > 0.{(i % 90) + 10:02d} '
            f'AND NOT text("photo of a {other}") BETWEEN 0.5 AND 0.7 -> {route}'
        )
    return head + "\n".join(body) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=2000)
    args = ap.parse_args()
    from lark import Lark

    from labelql.checker import check_text
    from labelql.parser import grammar_text, parse, split_statements, tokenize

    text = make_policy(args.rules)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.lql"
        path.write_text(text)
        cli = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "labelql.cli", "check", str(path)], check=True, capture_output=True
            )
            cli.append(time.perf_counter() - t)
        startup = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "labelql.cli", "--version"], check=True, capture_output=True
            )
            startup.append(time.perf_counter() - t)

    toks, _, _ = tokenize(text, "b.lql")
    n_tokens = sum(1 for t in toks if t.type not in ("NL", "COMMENT"))
    n_statements = sum(1 for _ in split_statements(toks))
    lex = best(lambda: tokenize(text, "b.lql"))
    ours_parse = best(lambda: parse(text, "b.lql"))
    ours_check = best(lambda: check_text(text, "b.lql"))

    # Baseline: Lark's own LALR loop building its parse tree from the same tokens (no AST, no spans).
    from lark import Token as LarkToken

    lark_tree = Lark(grammar_text(), parser="lalr", lexer="basic", start="statement", maybe_placeholders=True)

    def lark_baseline() -> None:
        toks, _, _ = tokenize(text, "b.lql")
        for stmt in split_statements(toks):
            ip = lark_tree.parse_interactive(start="statement")
            for t in stmt:
                ip.feed_token(t)  # type: ignore[arg-type]
            ip.feed_token(LarkToken("$END", ""))

    baseline = best(lark_baseline, repeat=3)
    table = Table(title=f"check: {args.rules:,} rules, {n_tokens:,} tokens, {n_statements:,} statements")
    for col in ("what", "time", "speed vs baseline", "goal"):
        table.add_column(col, justify="right")
    table.add_row(
        "labelql check (fresh process, median of 5)", f"{statistics.median(cli):.3f} s", "", "< 1 s"
    )
    table.add_row(
        "  of which interpreter + imports (--version)", f"{statistics.median(startup):.3f} s", "", ""
    )
    table.add_row("lex (in process, best of 5)", f"{lex:.3f} s", "", "")
    table.add_row("lex + parse to AST (LabelQL)", f"{ours_parse:.3f} s", f"{baseline / ours_parse:.2f}x", "")
    table.add_row("lex + parse + check", f"{ours_check:.3f} s", "", "")
    table.add_row("lex + Lark's own loop to a parse tree (baseline)", f"{baseline:.3f} s", "1.00x", "")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
