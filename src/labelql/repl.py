"""``labelql repl``: the interactive shell over a :class:`~labelql.session.Session`, and its script mode.

The shell is prompt_toolkit: history kept across sessions, LQL highlighting (:mod:`labelql.lexer`),
completion of keywords, functions, commands and the policy's own names (labels, spaces, projections,
cluster names, anchors, lets, slices, metadata fields), and multi-line input: Enter submits a complete
input and opens an indented line when the input clearly goes on (an open parenthesis, a trailing AND).
Script mode (``--script FILE``) reads the same inputs from a file, prints what the shell would, and
exits 1 when any input failed: useful in notebooks and CI.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labelql.cli import _ci, _pct, cell, print_why, routes_table, rules_table
from labelql.diagnostics import LabelQLError
from labelql.session import CONT, Answer, Session, incomplete, split_inputs

QUIT = (":quit", ":q", ":exit")
BAR = 24


def history_path() -> Path:
    """``$LABELQL_HISTORY``, else ``$XDG_STATE_HOME/labelql/history`` (``~/.local/state``)."""
    env = os.environ.get("LABELQL_HISTORY")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "labelql" / "history"


# -- answering -------------------------------------------------------------------------------------
def answer(session: Session, text: str, con: Console, as_json: bool = False) -> bool:
    """Evaluate one input and print its answer; False when it failed (the session goes on)."""
    try:
        result = session.execute(text)
    except LabelQLError as e:
        if as_json:
            con.print_json(json.dumps({"input": text, **e.to_json()}), indent=None)
        else:
            con.print(escape(e.render()), style="red", highlight=False)
        return False
    except Exception as e:  # the session must survive a bug; say what happened
        msg = f"internal error: {type(e).__name__}: {e}"
        if as_json:
            con.print_json(json.dumps({"input": text, "error": msg}), indent=None)
        else:
            con.print(escape(msg), style="red", highlight=False)
            con.print("  the session goes on; please report this with the input above", style="red")
        return False
    if as_json:
        payload = {"input": text, "kind": result.kind, **result.data, "ms": round(result.seconds * 1000, 1)}
        con.print_json(json.dumps(payload, default=str), indent=None)
        return True
    for n in result.notices:
        con.print(escape(n), style="yellow", highlight=False)
    show(result, con)
    con.print(f"({_ms(result.seconds)})", style="dim", highlight=False)
    return True


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def show(a: Answer, con: Console) -> None:
    """Print an answer (see :class:`~labelql.session.Answer` kinds)."""
    d = a.data
    if a.kind == "condition":
        _show_measure(d, con)
    elif a.kind == "rule":
        _show_what_if(d, con)
    elif a.kind == "statement":
        con.print(f"kept: {escape(d['text'])}", highlight=False)
        if "measure" in d:
            _show_measure(d["measure"], con)
        for c in d.get("clusters", []):
            name = c["cluster"] if c["cluster"] is not None else "(unclustered)"
            con.print(f"  cluster({c['projection']}) = {name}: {c['rows']:,} rows", highlight=False)
    elif a.kind == "added":
        con.print(f"added rule {d['rule']} ({escape(d['name'])})", highlight=False)
        con.print(routes_table(d["routes"], "routes now"))
    elif a.kind == "dropped":
        con.print(f"dropped rule {d['rule']}: {escape(d['text'])}", highlight=False)
    elif a.kind == "rules":
        con.print(rules_table(d["rules"]))
    elif a.kind == "routes":
        con.print(routes_table(d["routes"], f"routes ({d['total']:,} rows, {d['gold']:,} with gold)"))
    elif a.kind == "why":
        print_why(d, con)
    elif a.kind == "sample":
        t = Table(title=f"sample of: {escape(d['query'])}")
        for c in d["columns"]:
            t.add_column(escape(c))
        for row in d["rows"]:
            t.add_row(*[cell(v) for v in row])
        con.print(t)
    elif a.kind == "sweep":
        _show_sweep(d, con)
    elif a.kind == "suggest":
        _show_suggest(d, con)
    elif a.kind == "saved":
        con.print(f"saved {escape(d['path'])}: {d['rules']} rules, {d['lines']} lines (checks clean)")
    elif a.kind == "diff":
        if not d["diff"]:
            con.print("no changes since the policy was loaded")
        else:
            from rich.syntax import Syntax

            con.print(Syntax(d["diff"].rstrip("\n"), "diff", theme="ansi_dark", background_color="default"))
    elif a.kind == "policy":
        from rich.syntax import Syntax

        from labelql.lexer import LQLLexer

        con.print(Syntax(d["text"] or "# (empty)", LQLLexer(), theme="ansi_dark", background_color="default"))
    elif a.kind == "loaded":
        con.print(f"loaded {escape(d['path'])} ({d['rules']} rules)")
    elif a.kind == "help":
        t = Table(show_header=False, box=None)
        for k, v in d["commands"]:
            t.add_row(escape(k), escape(v))
        con.print(t)
    elif a.kind != "none":
        raise TypeError(f"no view for answer kind {a.kind!r}")


def _show_measure(d: dict[str, Any], con: Console) -> None:
    con.print(
        f"matched [bold]{d['matched']:,}[/bold] rows ({_pct(d['coverage'])} of {d['total']:,})",
        highlight=False,
    )
    if d["gold"]:
        mix = " · ".join(f"{escape(str(k))} {v:,}" for k, v in d["gold_mix"].items())
        con.print(f"gold: {mix}  ({d['gold']:,} of the matched rows have gold)", highlight=False)
        con.print(
            f"majority [bold]{escape(d['majority'])}[/bold]: "
            f"accuracy {_pct(d['accuracy'], 2)}{_ci(d['ci95'])}",
            highlight=False,
        )
    elif d.get("estimated"):
        est = d["estimated"]
        mix = " · ".join(f"{escape(k)} {_pct(v)}" for k, v in est["mix"].items())
        con.print(
            f"no gold labels here: the label model estimates {mix}; majority {escape(est['label'])} "
            f"≈ {_pct(est['accuracy'], 2)} (estimated, not measured)",
            highlight=False,
        )
    elif d["matched"]:
        con.print("no gold labels here, and no rules for the label model to estimate from", highlight=False)
    r = d["current_routes"]
    con.print(
        f"routed now: done {r['done']:,} · review {r['review']:,} · manual {r['manual']:,}",
        style="dim",
        highlight=False,
    )


def _show_what_if(d: dict[str, Any], con: Console) -> None:
    con.print(f"rule: {escape(d['rule'])}", highlight=False)
    acc = (
        f"; accuracy for {escape(d['label'])} {_pct(d['accuracy'], 2)}{_ci(d['ci95'])} "
        f"on {d['gold']:,} gold rows"
        if d["accuracy"] is not None
        else "; no gold labels among them"
    )
    con.print(f"matches {d['matched']:,} rows ({_pct(d['coverage'])}){acc}", highlight=False)
    con.print(
        f"if added: newly decided {d['newly_decided']:,} · relabelled {d['relabelled']:,} · "
        f"new conflicts {d['new_conflicts']:,}",
        highlight=False,
    )
    if d["moves"]:
        moves = " · ".join(f"{m['from']} -> {m['to']} {m['rows']:,}" for m in d["moves"])
        con.print(f"moves: {moves}", highlight=False)
    else:
        con.print("moves: none (no row changes route)", highlight=False)
    t = Table(title="routes before -> after")
    for col in ("route", "rows before", "rows after", "accuracy before", "accuracy after"):
        t.add_column(col, justify="left" if col == "route" else "right")
    for b, a in zip(d["routes_before"], d["routes_after"], strict=True):
        t.add_row(
            b["route"],
            f"{b['rows']:,} ({_pct(b['share'])})",
            f"{a['rows']:,} ({_pct(a['share'])})",
            _pct(b["accuracy"], 2),
            _pct(a["accuracy"], 2),
        )
    con.print(t)
    con.print(":add keeps it", style="dim")


def _show_sweep(d: dict[str, Any], con: Console) -> None:
    t = Table(title=f"sweep {escape(d['expr'])} > t" + (f" for {escape(d['for'])}" if d["for"] else ""))
    for col in ("t", "matched", "coverage", "", "label", "accuracy [95% CI]", "n gold"):
        t.add_column(col, justify="left" if col in ("", "label") else "right")
    for r in d["rows"]:
        bar = "█" * round(BAR * r["coverage"])
        t.add_row(
            f"{r['threshold']:.3f}",
            f"{r['matched']:,}",
            _pct(r["coverage"]),
            bar,
            escape(r["label"] or "-"),
            "-" if r["accuracy"] is None else _pct(r["accuracy"], 2) + _ci(r["ci95"]),
            f"{r['gold']:,}",
        )
    con.print(t)


def _show_suggest(d: dict[str, Any], con: Console) -> None:
    if d["threshold"] is None:
        con.print(
            f"no threshold reaches precision {d['target']} for {escape(d['label'])}: the best is "
            f"{_pct(d['best_precision'], 2)} at > {d['best_threshold']}",
            highlight=False,
        )
        return
    con.print(
        f"lowest threshold with precision >= {d['target']} for {escape(d['label'])}: "
        f"[bold]{escape(d['expr'])} > {d['threshold']}[/bold]",
        highlight=False,
    )
    con.print(
        f"precision {_pct(d['precision'], 2)}{_ci(d['ci95'])} on {d['gold']:,} gold rows; "
        f"matches {d['matched']:,} rows ({_pct(d['coverage'])})",
        highlight=False,
    )
    if not d["lower_bound_meets"]:
        con.print(
            f"note: the interval's lower bound is below {d['target']}: the gold rows cannot show that "
            "precision with 95% confidence",
            style="yellow",
            highlight=False,
        )
    con.print(f"as a rule: {escape(d['rule'])}", style="dim", highlight=False)


# -- script mode -----------------------------------------------------------------------------------
def run_script(session: Session, text: str, con: Console, as_json: bool = False) -> int:
    """Run every input of a script, echoing each; 0 when all succeeded, else 1."""
    failed = 0
    for item in split_inputs(text):
        if item.strip() in QUIT:
            break
        if not as_json:
            first, *rest = item.split("\n")
            con.print(f"[bold]lql>[/bold] {escape(first)}", highlight=False)
            for line in rest:
                con.print(f"...  {escape(line)}", highlight=False)
        failed += not answer(session, item, con, as_json)
    return 1 if failed else 0


# -- the interactive shell -------------------------------------------------------------------------
def completion_words(session: Session) -> list[str]:
    """Everything worth completing at this point of the session."""
    from labelql.checker import BUILTINS, FUNCTIONS
    from labelql.lexer import OPERATOR_WORDS
    from labelql.parser import STATEMENT_KEYWORDS
    from labelql.session import COMMANDS

    p = session.policy
    words: list[str] = [*STATEMENT_KEYWORDS, *(w.upper() for w in OPERATOR_WORDS), "done", "review"]
    words += [f"{f}(" for f in (*FUNCTIONS, "anchors")] + list(BUILTINS)
    words += [f":{c}" for c in COMMANDS] + [":quit"]
    words += list(p.labels) + [s.name for s in p.spaces] + [x.name for x in p.projections]
    words += [c.name for cs in p.cluster_sets for c in cs.clusters]
    words += [a.name for a in p.anchors] + [x.name for x in p.lets] + [s.name for s in p.slices]
    words += [f'meta("{m}")' for m in session.meta_fields]
    return list(dict.fromkeys(words))


_AFTER_CLUSTER = re.compile(r"cluster\(\s*(\w+)\s*\)\s*(?:=|!=|<>|(?:NOT\s+)?IN\s*\([^()]*)\s*\w*$", re.I)
_AFTER_ARROW = re.compile(r"->\s*\w*$")


def context_words(session: Session, before: str) -> list[str]:
    """What may come next at the end of ``before``: a projection's cluster names after
    ``cluster(P) =`` / ``IN (``, routes after ``->``, otherwise everything (:func:`completion_words`)."""
    p = session.policy
    m = _AFTER_CLUSTER.search(before)
    if m:
        names = [c.name for cs in p.cluster_sets if cs.projection == m.group(1) for c in cs.clusters]
        if names:
            return list(dict.fromkeys(names))
    if _AFTER_ARROW.search(before):
        return ["done", "review"]
    return completion_words(session)


def make_completer(session: Session) -> Any:
    """A prompt_toolkit completer over :func:`context_words`."""
    from prompt_toolkit.completion import Completer, WordCompleter

    class LQLCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Any:
            words = context_words(session, document.text_before_cursor)
            yield from WordCompleter(words, ignore_case=True, WORD=True).get_completions(
                document, complete_event
            )

    return LQLCompleter()


def run_interactive(session: Session, con: Console) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer

    from labelql.lexer import LQLLexer

    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    kb = KeyBindings()

    @kb.add("enter")
    def _enter(event: Any) -> None:
        buf = event.current_buffer
        if incomplete(buf.text):
            buf.insert_text("\n" + CONT)
        else:
            buf.validate_and_handle()

    @kb.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n" + CONT)

    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(path)),
        lexer=PygmentsLexer(LQLLexer),
        completer=make_completer(session),
        complete_while_typing=False,
        multiline=True,
        key_bindings=kb,
        prompt_continuation=lambda width, line_number, wrap_count: "...  ",
    )
    con.print(
        f"LabelQL REPL on {session.db} ({session.total:,} rows, {session.gold_rows:,} with gold); "
        f"policy {session.file} ({len(session.policy.rules)} rules). :help lists commands; Ctrl-D leaves.",
        highlight=False,
    )
    while True:
        try:
            text = prompt.prompt("lql> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        items: Iterable[str] = split_inputs(text)
        if any(i.strip() in QUIT for i in items):
            break
        for item in items:
            try:
                answer(session, item, con)
            except KeyboardInterrupt:  # Ctrl-C stops the answer, not the session
                con.print("interrupted", style="yellow")
                break
