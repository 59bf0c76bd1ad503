"""The REPL: its answers equal the engine's, what-ifs equal real runs, errors never end a session."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, copy_store
from labelql.checker import check_file, check_text
from labelql.cli import main
from labelql.session import Session, classify, incomplete, split_inputs

POLICY = REPO / "rules" / "cats_dogs.lql"
CAT_PROMPT = 'text("photo of a cat")'


def script(
    db: Path, text: str, policy: Path | None = POLICY, tmp: Path | None = None
) -> tuple[int, list[dict]]:
    """Run a script through the CLI in --json mode: the exit code and one answer per input."""
    args = ["repl", *([str(policy)] if policy else []), "--db", str(db), "--json", "--script", "-"]
    res = CliRunner().invoke(main, args, input=text)
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return res.exit_code, lines


@pytest.fixture
def db(demo_db: Path, tmp_path: Path) -> Path:
    return copy_store(demo_db, tmp_path / "copy")


# -- reading input -----------------------------------------------------------------------------------
def test_inputs_are_split_like_policy_statements() -> None:
    text = (
        "# a comment\n"
        'text("a") > 0.5 AND\n'
        "cluster(umap) = cats\n"
        "\n"
        "dog IF cluster(umap) = dogs\n"
        "    AND cluster(tsne) = dogs -> done\n"
        ":add\n"
        "let x = (text('a') > 0.1\n"
        "  OR text('b') > 0.2)\n"
    )
    assert split_inputs(text) == [
        'text("a") > 0.5 AND\ncluster(umap) = cats',
        "dog IF cluster(umap) = dogs\n    AND cluster(tsne) = dogs -> done",
        ":add",
        "let x = (text('a') > 0.1\n  OR text('b') > 0.2)",
    ]
    assert incomplete("text('a') > 0.5 AND") and incomplete("(a OR") and incomplete("dog IF")
    assert not incomplete("text('a') > 0.5") and not incomplete(":sweep text(")
    kinds = [
        classify(x) for x in ("cat IF x -> done", "rule r: cat IF x -> done", "let a = 1", "x > 1", ":rules")
    ]
    assert kinds == ["rule", "rule", "statement", "condition", "command"]


def test_lexer_highlights_every_example_policy_without_error_tokens() -> None:
    from pygments.token import Error, Keyword, Name, Operator

    from labelql.lexer import LQLLexer

    for path in (REPO / "rules").glob("*.lql"):
        toks = list(LQLLexer().get_tokens(path.read_text()))
        assert not [t for t in toks if t[0] in Error], path
    toks = [
        t
        for t in LQLLexer().get_tokens('cat IF cluster(umap) = cats AND text("x") > 0.6 -> done')
        if t[1].strip()
    ]
    assert (
        (Operator.Word, "IF") in toks
        and (Name.Function, "cluster") in toks
        and (Name.Constant, "done") in toks
    )
    assert (Keyword.Declaration, "let") in list(LQLLexer().get_tokens("let x = anchors(a)"))
    # Registered for Pygments users (pygmentize -l lql, documentation tools) through the entry point.
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("lql"), LQLLexer)
    assert isinstance(get_lexer_for_filename("policy.lql"), LQLLexer)
    assert (Name.Function, "anchors") in list(LQLLexer().get_tokens("let x = anchors(a)"))


# -- answers equal the engine's ------------------------------------------------------------------------
def test_condition_numbers_equal_a_direct_count(demo_db: Path) -> None:
    from labelql.engine import GOLD_VIEW, latest_cluster_runs
    from labelql.plan import build_plan
    from labelql.store import Store

    rc, out = script(demo_db, f"{CAT_PROMPT} > 0.61 AND cluster(umap) = cats\n")
    assert rc == 0, out
    got = out[0]
    policy = check_file(POLICY)
    with Store.open(demo_db, read_only=True) as s:
        sid = next(
            c.source for c in build_plan(policy).columns if c.source.startswith("text|") and "cat" in c.source
        )
        run = latest_cluster_runs(s, policy)["umap"]
        rows = s.con.execute(
            "SELECT sc.value, ca.name, g.gold FROM rows r "
            "JOIN scores sc ON sc.key = r.key AND sc.signal = ? "
            f"LEFT JOIN cluster_assign ca ON ca.key = r.key AND ca.run_id = ? "
            f"LEFT JOIN ({GOLD_VIEW}) g ON g.key = r.key",
            [sid, run],
        ).fetchall()
    hit = [g for v, name, g in rows if v > 0.61 and name == "cats"]
    assert got["matched"] == len(hit) and got["total"] == 3000
    assert got["gold_mix"] == {k: hit.count(k) for k in set(hit)}
    assert got["majority"] == "cat"
    assert got["accuracy"] == pytest.approx(hit.count("cat") / len(hit))
    lo, hi = got["ci95"]
    assert lo < got["accuracy"] <= hi


def test_routes_and_rules_equal_labelql_run(demo_db: Path) -> None:
    rc, out = script(demo_db, ":routes\n:rules\n")
    assert rc == 0, out
    res = CliRunner().invoke(main, ["run", str(POLICY), "--db", str(demo_db), "--json", "--no-keep"])
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout)
    for mine, theirs in zip(out[0]["routes"], run["routes"], strict=True):
        for k in ("route", "rows", "gold", "errors", "accuracy", "ci95", "cumulative_coverage"):
            assert mine[k] == theirs[k], k
        assert mine["estimated_accuracy"] == pytest.approx(theirs["estimated_accuracy"])
    for mine, theirs in zip(out[1]["rules"], run["rules"], strict=True):
        for k in ("rule", "matched", "overlaps", "conflicts", "decided", "gold", "correct", "ci95"):
            assert mine[k] == theirs[k], k


def test_what_if_equals_running_the_policy_with_the_rule(demo_db: Path, tmp_path: Path) -> None:
    from labelql.engine import run_policy
    from labelql.store import Store

    rule = f"cat IF {CAT_PROMPT} > 0.58 -> review"
    rc, out = script(demo_db, rule + "\n")
    assert rc == 0, out
    w = out[0]
    extended = tmp_path / "extended.lql"
    extended.write_text(POLICY.read_text() + rule + "\n")
    with Store.open(demo_db, read_only=True) as s:
        before = run_policy(s, check_file(POLICY), keep=False, prepare_first=False)
        old = {k: v for k, *v in s.con.execute("SELECT key, label, route, reason FROM _assign").fetchall()}
        after = run_policy(s, check_file(extended), keep=False, prepare_first=False)
        new = {k: v for k, *v in s.con.execute("SELECT key, label, route, reason FROM _assign").fetchall()}
    assert [r["rows"] for r in w["routes_before"]] == [r["rows"] for r in before.routes]
    assert [r["rows"] for r in w["routes_after"]] == [r["rows"] for r in after.routes]
    assert [r["accuracy"] for r in w["routes_after"]] == [r["accuracy"] for r in after.routes]
    assert w["matched"] == after.rules[-1]["matched"] and w["accuracy"] == after.rules[-1]["accuracy"]
    assert w["newly_decided"] == sum(1 for k in old if old[k][0] is None and new[k][0] is not None) > 0
    moved = {}
    for k in old:
        if old[k][1] != new[k][1]:
            moved[(old[k][1], new[k][1])] = moved.get((old[k][1], new[k][1]), 0) + 1
    assert {(m["from"], m["to"]): m["rows"] for m in w["moves"]} == moved

    def conflict(reason: str | None) -> bool:
        return (reason or "").startswith("conflict")

    assert w["new_conflicts"] == sum(1 for k in old if conflict(new[k][2]) and not conflict(old[k][2]))


def test_what_if_reports_new_conflicts(demo_db: Path) -> None:
    # A review rule for dog on confident cats conflicts wherever the cat review rule also holds.
    rc, out = script(demo_db, f"dog IF {CAT_PROMPT} > 0.55 AND cluster(tsne) = cats -> review\n")
    assert rc == 0
    w = out[0]
    assert w["new_conflicts"] > 0
    moves = {(m["from"], m["to"]): m["rows"] for m in w["moves"]}
    assert moves.get(("review", "manual"), 0) == w["new_conflicts"]


# -- a session from start to :save ---------------------------------------------------------------------
SESSION = f"""\
{CAT_PROMPT} > 0.61 AND cluster(umap) = cats
cat IF {CAT_PROMPT} > 0.58 AND NOT fs_dog -> review
:add
let cat_mid = {CAT_PROMPT} BETWEEN 0.55 AND 0.58
txt("photo of a cat") > 0.6
cat IF cluster(umap) = cats AND nl_cat_hgh -> done
:drop 99
:drop 3
:routes
:diff
:save {{out}}
"""


def test_script_session_keeps_going_after_errors_and_saves_a_policy_that_runs_the_same(
    db: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "saved.lql"
    rc, out = script(db, SESSION.format(out=out_file))
    assert rc == 1  # three inputs failed
    kinds = [o.get("kind", "error") for o in out]
    assert kinds == [
        "condition",
        "rule",
        "added",
        "statement",
        "error",
        "error",
        "error",
        "dropped",
        "routes",
        "diff",
        "saved",
    ]
    typo = out[4]["diagnostics"][0]
    assert (typo["file"], typo["line"], typo["col"], typo["hint"]) == ("<repl>", 1, 1, "did you mean 'text'?")
    assert out[5]["diagnostics"][0]["col"] == 33 and "nl_cat_high" in out[5]["diagnostics"][0]["hint"]
    assert "+let cat_mid" in out[9]["diff"] and "-dog IF near" not in out[9]["diff"]
    assert "-dog IF fs_dog -> done" in out[9]["diff"]
    saved = check_file(out_file)
    assert len(saved.rules) == 5 and saved.lets[-1].name == "cat_mid"
    res = CliRunner().invoke(main, ["run", str(out_file), "--db", str(db), "--json", "--no-keep"])
    assert res.exit_code == 0, res.output
    assert [r["rows"] for r in json.loads(res.stdout)["routes"]] == [r["rows"] for r in out[8]["routes"]]


def test_multi_line_errors_point_into_the_typed_text(db: Path) -> None:
    rc, out = script(db, f"{CAT_PROMPT} > 0.6 AND\n    cluster(umap) = kats\n")
    assert rc == 1
    d = out[0]["diagnostics"][0]
    assert (d["file"], d["line"], d["col"]) == ("<repl>", 2, 21)
    assert "cats" in d["hint"]
    res = CliRunner().invoke(
        main, ["repl", str(POLICY), "--db", str(db), "--script", "-"], input="cluster(umap) = kats\n"
    )
    assert " 1 | cluster(umap) = kats" in res.stdout and "^^^^" in res.stdout


def test_sweep_and_suggest_agree_with_direct_counts(db: Path) -> None:
    rc, out = script(db, f":sweep {CAT_PROMPT} for cat\n:suggest {CAT_PROMPT} precision>=0.99 for cat\n")
    assert rc == 0, out
    sweep, suggest = out
    assert [r["threshold"] for r in sweep["rows"]][:3] == [0.5, 0.51, 0.52] and len(sweep["rows"]) == 21
    rc, again = script(db, f"{CAT_PROMPT} > 0.61\n")
    at_061 = next(r for r in sweep["rows"] if r["threshold"] == 0.61)
    assert at_061["matched"] == again[0]["matched"]
    cats = again[0]["gold_mix"].get("cat", 0)
    assert at_061["accuracy"] == pytest.approx(cats / again[0]["gold"])
    t = suggest["threshold"]
    assert suggest["precision"] >= 0.99
    rc, check = script(db, f"{CAT_PROMPT} > {t}\n{CAT_PROMPT} > {round(t - 0.001, 3)}\n")
    assert check[0]["matched"] == suggest["matched"]
    assert check[0]["gold_mix"]["cat"] / check[0]["gold"] == pytest.approx(suggest["precision"])
    # One step lower no longer meets the target: it is the lowest threshold that does.
    assert check[1]["gold_mix"]["cat"] / check[1]["gold"] < 0.99


def test_sample_why_and_statements(db: Path) -> None:
    _, out = script(
        db,
        f"{CAT_PROMPT} > 0.65\n:sample 4\n:why cat_vs_dog_3\nslice confident = {CAT_PROMPT} > 0.65\n"
        "clusters umap2: a = anchors(cat_examples)\n:help\n",
    )
    assert out[1]["columns"][:3] == ["key", "path", CAT_PROMPT] and len(out[1]["rows"]) == 4
    assert all(row[2] > 0.65 for row in out[1]["rows"])
    assert out[2]["key"] == "cat_vs_dog_3" and out[2]["route"] in ("done", "review", "manual")
    assert out[3]["measure"]["matched"] == out[0]["matched"]
    assert out[4]["diagnostics"][0]["message"].startswith("unknown projection")
    assert out[5]["kind"] == "help"


def test_without_gold_the_label_model_estimate_is_marked(db: Path) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("DELETE FROM gold")
    con.close()
    rc, out = script(db, f"{CAT_PROMPT} > 0.61\n")
    assert rc == 0
    d = out[0]
    assert d["gold"] == 0 and d["accuracy"] is None
    assert d["estimated"]["label"] == "cat" and 0.5 < d["estimated"]["accuracy"] <= 1.0
    res = CliRunner().invoke(
        main, ["repl", str(POLICY), "--db", str(db), "--script", "-"], input=f"{CAT_PROMPT} > 0.61\n"
    )
    assert "estimated, not measured" in res.stdout


def test_new_data_and_new_prompts_need_no_restart(db: Path) -> None:
    import duckdb

    s = Session(db, POLICY)
    first = s.execute(f"{CAT_PROMPT} > 0.61").data
    # Another process changes gold while the session is open: the session does not hold the file.
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM gold WHERE key IN (SELECT key FROM gold ORDER BY key LIMIT 100)")
    con.close()
    again = s.execute(f"{CAT_PROMPT} > 0.61")
    assert any("changed" in n for n in again.notices)
    assert again.data["matched"] == first["matched"] and again.data["gold"] < first["gold"]
    # A prompt never seen is encoded and scored on the spot.
    fresh = s.execute('text("a kitten on a sofa") > 0.55').data
    assert fresh["total"] == 3000 and 0 < fresh["matched"] < 3000
    assert fresh["majority"] == "cat"


def test_an_empty_session_builds_a_policy_from_nothing(db: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "new.lql"
    rc, out = script(
        db,
        "labels cat, dog\n"
        'embedding clip = simulated("cats_dogs", seed=0)\n'
        'cat IF text("photo of a cat") > 0.61 -> done\n'
        ":add\n"
        f":save {out_file}\n",
        policy=None,
    )
    assert rc == 0, out
    assert out[3]["routes"][0]["rows"] > 1000
    assert len(check_file(out_file).rules) == 1


def test_completion_words_cover_the_policy() -> None:
    from labelql.repl import completion_words

    class Fake:
        def __init__(self) -> None:
            self.policy = check_file(POLICY)
            self.meta_fields = ["simulated"]

    words = completion_words(Fake())  # type: ignore[arg-type]
    for w in (
        "cat",
        "dog",
        "clip",
        "umap",
        "tsne",
        "cats",
        "dogs",
        "cat_examples",
        "nl_cat_high",
        "new_cats",
    ):
        assert w in words, w
    assert "text(" in words and ":sweep" in words and 'meta("simulated")' in words and "AND" in words

    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from labelql.repl import make_completer

    def complete(text: str) -> list[str]:
        return [c.text for c in make_completer(Fake()).get_completions(Document(text), CompleteEvent())]  # type: ignore[arg-type]

    assert complete("nl_cat_h") == ["nl_cat_high"]
    assert complete("cluster(tsne) = ") == ["cats", "dogs"]  # that projection's clusters, nothing else
    assert complete("cluster(umap) IN (cats, d") == ["dogs"]
    assert complete("cat IF nl_cat_high -> ") == ["done", "review"]


def test_the_documented_walkthrough_rebuilds_the_guides_policy(db: Path, tmp_path: Path) -> None:
    """docs/walkthrough.repl (pasted into docs/repl.md from a real run) still works, and what it saves
    routes every row exactly as rules/cats_dogs.lql does."""
    saved = tmp_path / "rebuilt.lql"
    text = (
        (REPO / "docs" / "walkthrough.repl").read_text().replace(":save my_cats_dogs.lql", f":save {saved}")
    )
    rc, out = script(db, text, policy=REPO / "docs" / "cats_dogs_base.lql")
    assert rc == 0, [o for o in out if "kind" not in o]
    assert out[-1]["kind"] == "saved"
    runs = []
    for policy in (saved, POLICY):
        res = CliRunner().invoke(main, ["run", str(policy), "--db", str(db), "--json", "--no-keep"])
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.stdout)["routes"])
    assert runs[0] == runs[1]


# -- a real terminal -----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_terminal_session_under_tmux(db: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "typed.lql"
    name = f"lql{int(time.time() * 1000) % 10**8}"
    labelql = Path(sys.executable).with_name("labelql")
    env = f"LABELQL_HISTORY={tmp_path / 'history'}"
    cmd = f"cd {REPO} && {env} {labelql} repl {POLICY} --db {db}; sleep 5"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "180", "-y", "60", cmd], check=True)

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-t", name, "-p", "-S", "-300"], capture_output=True, text=True
        ).stdout

    def wait_for(text: str, timeout: float = 60) -> str:
        end = time.time() + timeout
        while time.time() < end:
            if text in (s := screen()):
                return s
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared:\n{screen()}")

    def send(*keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", name, *keys], check=True)

    try:
        wait_for("lql>")
        send("nl_cat_h", "Tab")  # Tab completes the let's name (the completer runs in the background)
        wait_for("lql> nl_cat_high")
        send("Enter")
        wait_for("majority cat")
        send(f"{CAT_PROMPT} > 0.61 AND", "Enter")  # an incomplete line continues
        wait_for("...")
        send("cluster(umap) = cats", "Enter")
        wait_for("majority cat")
        send(f"cat IF {CAT_PROMPT} > 0.58 AND NOT fs_dog -> review", "Enter")
        wait_for(":add keeps it")
        send(":add", "Enter")
        wait_for("added rule 6")
        send(f":save {out_file}", "Enter")
        wait_for("checks clean")
        send("C-d")
        time.sleep(0.5)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
    saved = check_file(out_file)
    assert len(saved.rules) == 6
    assert "cluster(umap) = cats" in (tmp_path / "history").read_text()
    res = CliRunner().invoke(main, ["run", str(out_file), "--db", str(db), "--json", "--no-keep"])
    _, out = script(db, f"cat IF {CAT_PROMPT} > 0.58 AND NOT fs_dog -> review\n")
    assert [r["rows"] for r in json.loads(res.stdout)["routes"]] == [
        r["rows"] for r in out[0]["routes_after"]
    ]
    assert check_text(out_file.read_text(), str(out_file)).rules[-1].route == "review"


def test_a_database_busy_in_another_process_does_not_stop_the_session(db: Path) -> None:
    s = Session(db, POLICY)
    first = s.execute(f"{CAT_PROMPT} > 0.61").data
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "c.execute(\"DELETE FROM gold WHERE key = 'cat_vs_dog_12'\"); c.execute('CHECKPOINT'); "
            "print('ready', flush=True); time.sleep(60)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        busy = s.execute(f"{CAT_PROMPT} > 0.61")
        assert any("another process" in n for n in busy.notices), busy.notices
        assert busy.data["gold"] == first["gold"]  # answered from the copy loaded before
    finally:
        holder.kill()
        holder.wait()
    again = s.execute(f"{CAT_PROMPT} > 0.61")
    assert any("changed" in n for n in again.notices)
    assert again.data["gold"] == first["gold"] - 1
