"""Set it and forget it: apply on new data, slices, runs, diff between policy versions, expectations."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import DEMO_ROWS, REPO, copy_store, generate_images
from labelql.checker import check_file
from labelql.cli import main
from labelql.store import Store

POLICY = REPO / "rules" / "cats_dogs.lql"
HALF = DEMO_ROWS // 2


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def decisions(db: Path, run_id: int) -> dict[str, tuple[str | None, str]]:
    with Store.open(db, read_only=True) as s:
        rows = s.con.execute("SELECT key, label, route FROM run_rows WHERE run_id = ?", [run_id]).fetchall()
    return {k: (label, route) for k, label, route in rows}


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half of the demo rows, run (maps fitted on them); then the other half ingested and applied."""
    pytest.importorskip("umap")
    from labelql.demo import add_demo_rows, build_demo_store

    db = tmp_path_factory.mktemp("halves") / "h.duckdb"
    build_demo_store(db, rows=HALF)
    code, out = cli("run", str(POLICY), "--db", str(db), "--json")
    assert code == 0, out
    add_demo_rows(db, HALF, DEMO_ROWS)
    code, out = cli("apply", str(POLICY), "--db", str(db), "--json")
    assert code == 0, out
    return db


def test_apply_routes_only_new_rows_and_keeps_earlier_labels(halves: Path) -> None:
    first, applied = decisions(halves, 1), decisions(halves, 2)
    assert len(first) == HALF and len(applied) == DEMO_ROWS - HALF
    assert not set(first) & set(applied)
    with Store.open(halves, read_only=True) as s:
        of_record = {
            k: (lab, r)
            for k, lab, r, _ in s.con.execute("SELECT key, label, route, run_id FROM applied").fetchall()
        }
        kinds = s.con.execute("SELECT id, kind, rows_routed FROM runs ORDER BY id").fetchall()
        placed = dict(
            s.con.execute(
                "SELECT placed_by, count(*) FROM map_coords "
                "WHERE map_id = (SELECT min(id) FROM maps) GROUP BY 1"
            ).fetchall()
        )
        scored = s.con.execute("SELECT count(DISTINCT key) FROM scores").fetchall()[0][0]
    assert kinds == [(1, "run", HALF), (2, "apply", DEMO_ROWS - HALF)]
    assert {k: of_record[k] for k in first} == first  # the first half keeps its labels
    assert {k: of_record[k] for k in applied} == applied
    # The new rows were placed on the fitted maps by transform, not by refitting.
    assert placed == {"fit": HALF, "transform": DEMO_ROWS - HALF}
    assert scored == DEMO_ROWS
    code, out = cli("apply", str(POLICY), "--db", str(halves))
    assert code == 0 and "nothing to apply" in out


def test_applied_rows_equal_a_full_run_on_the_same_maps(halves: Path, tmp_path: Path) -> None:
    from labelql.engine import run_policy

    db = copy_store(halves, tmp_path / "c")
    with Store.open(db) as s:
        run_policy(s, check_file(POLICY), keep=False)
        full = {
            k: (lab, r) for k, lab, r in s.con.execute("SELECT key, label, route FROM _assign").fetchall()
        }
    applied = decisions(db, 2)
    assert {k: full[k] for k in applied} == applied


def test_transform_versus_fitting_on_everything(halves: Path, demo_db: Path) -> None:
    """The same rows decided with maps fitted on all of them (demo_db) or placed by transform (halves):
    the difference the transform causes, measured; docs/workflow.md reports it."""
    applied = decisions(halves, 2)
    with Store.open(demo_db, read_only=True) as s:
        run = s.con.execute("SELECT max(id) FROM runs").fetchall()[0][0]
    fitted = decisions(demo_db, run)
    same = sum(1 for k in applied if fitted[k] == applied[k])
    agreement = same / len(applied)
    moves: dict[str, int] = {}
    for k in applied:
        if fitted[k] != applied[k]:
            step = f"{fitted[k][1]} {fitted[k][0]} -> {applied[k][1]} {applied[k][0]}"
            moves[step] = moves.get(step, 0) + 1
    labelled = [k for k in applied if applied[k][0] and fitted[k][0]]
    label_agreement = sum(applied[k][0] == fitted[k][0] for k in labelled) / len(labelled)
    print(
        f"\ntransform vs fit-on-all: {same} of {len(applied)} rows decided alike ({agreement:.2%}); "
        f"labels agree on {label_agreement:.2%} of rows both label; moves (fit -> transform): {moves}"
    )
    assert agreement > 0.97
    # Placement moves rows between routes far more often than between labels.
    assert label_agreement > 0.99


def test_unlabeled_means_no_gold_and_no_label_of_record(demo_db: Path, tmp_path: Path) -> None:
    db = copy_store(demo_db, tmp_path / "c")
    with Store.open(db) as s:
        s.con.execute("DELETE FROM gold WHERE key IN ('cat_vs_dog_12', 'cat_vs_dog_57', 'cat_vs_dog_3')")
        s.con.execute("DELETE FROM applied WHERE key IN ('cat_vs_dog_12', 'cat_vs_dog_3')")
    code, out = cli("slice", str(POLICY), "new_cats", "--db", str(db), "--json", "--show", "5")
    assert code == 0, out
    got = json.loads(out)
    # 57 still has a label of record; 3 is a dog; 12 is a confident cat with neither label.
    assert [r["key"] for r in got["shown"]] == ["cat_vs_dog_12"] and got["rows"] == 1
    assert got["shown"][0]['text("photo of a cat")'] > 0.61
    out_file = tmp_path / "slice.csv"
    code, out = cli("slice", str(POLICY), "new_cats", "--db", str(db), "--export", str(out_file))
    assert code == 0 and "1 of 3,000 rows" in out and "cat_vs_dog_12" in out_file.read_text()
    code, out = cli("slice", str(POLICY), "new_cat", "--db", str(db))
    assert code == 1 and "did you mean 'new_cats'" in out


def test_runs_lists_git_commit_and_diff_between_git_revisions(demo_db: Path, tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    db = copy_store(demo_db, tmp_path / "c")
    repo = tmp_path / "repo"
    repo.mkdir()
    policy = repo / "cats_dogs.lql"
    original = POLICY.read_text()
    policy.write_text(original)

    def git(*args: str) -> str:
        env = {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        import os

        return subprocess.run(
            ["git", "-C", str(repo), *args],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "v1")
    v1 = git("rev-parse", "HEAD")
    # v2: a looser done threshold for dogs, and the medium-confidence cat rule gone.
    changed = original.replace(
        'text("photo of a dog") > 0.61 -> done', 'text("photo of a dog") > 0.55 -> done'
    )
    changed = changed.replace(
        "cat IF (cluster(umap) = cats OR cluster(tsne) = cats) AND NOT nl_cat_low -> review\n", ""
    )
    assert changed != original
    policy.write_text(changed)
    git("commit", "-q", "-am", "v2")

    code, out = cli("run", str(policy), "--db", str(db), "--json")
    assert code == 0, out
    code, out = cli("runs", "--db", str(db), "--json")
    newest = json.loads(out)[0]
    assert newest["git_commit"] == git("rev-parse", "HEAD") and newest["kind"] == "run"
    policy.write_text(changed + "# an edit not committed\n")
    code, out = cli("run", str(policy), "--db", str(db), "--json", "--no-keep")
    assert code == 0
    policy.write_text(changed)

    spec_old, spec_new = f"git:{v1}:{policy}", f"git:HEAD:{policy}"
    code, out = cli("diff", spec_old, spec_new, "--db", str(db), "--json", "--show", "3")
    assert code == 0, out
    d = json.loads(out)
    # The same comparison by hand: run both versions and compare row by row.
    from labelql.engine import run_policy

    by_hand = []
    with Store.open(db) as s:
        for text in (original, changed):
            run_policy(s, check_file(str(policy), text), keep=False)
            by_hand.append(
                dict(
                    (k, (lab, r))
                    for k, lab, r in s.con.execute("SELECT key, label, route FROM _assign").fetchall()
                )
            )
    changed_keys = [k for k in by_hand[0] if by_hand[0][k] != by_hand[1][k]]
    assert d["changed"] == len(changed_keys) > 0 and d["rows"] == DEMO_ROWS
    assert sum(t["rows"] for t in d["transitions"]) == len(changed_keys)
    assert any(r.startswith("cat IF (cluster(umap) = cats OR") for r in d["rules_removed"])
    assert len(d["examples"]) == 3 and all(e["key"] in changed_keys for e in d["examples"])
    after = {r["route"]: r["rows_after"] for r in d["routes"]}
    assert after["done"] == sum(1 for v in by_hand[1].values() if v[1] == "done")

    # A stored run against the file it came from: nothing changes.
    code, out = cli("diff", f"run:{newest['run']}", str(policy), "--db", str(db), "--json")
    assert code == 0 and json.loads(out)["changed"] == 0
    code, out = cli("diff", spec_old, spec_new, "--db", str(db), "--markdown")
    assert code == 0, out
    assert out.startswith("### Labeling policy diff") and "| route | rows before |" in out
    assert "```diff" in out and "- cat IF" in out
    code, out = cli("diff", "git:nope:x.lql", str(policy), "--db", str(db))
    assert code == 1 and "cannot read" in out
    code, out = cli("diff", "run:999", str(policy), "--db", str(db))
    assert code == 1 and "no run 999" in out


def test_expectations_pass_fail_and_carets(demo_db: Path, tmp_path: Path) -> None:
    db = copy_store(demo_db, tmp_path / "c")
    policy = tmp_path / "cats_dogs.lql"
    policy.write_text(POLICY.read_text() + "\nexpect coverage(done) >= 0.80\n")
    (tmp_path / "cats_dogs.expect.lql").write_text(
        'expect accuracy(done) >= 0.99\nexpect "cat_vs_dog_3" -> dog done\nexpect rows(manual) < 100\n'
    )
    code, out = cli("test", str(policy), "--db", str(db), "--json")
    assert code == 0, out
    got = json.loads(out)
    assert got["passed"] and len(got["expectations"]) == 4
    assert got["expectations"][2]["actual"] == "dog done"
    # A failing expectation fails the command (for CI), and says what was measured.
    (tmp_path / "cats_dogs.expect.lql").write_text(
        'expect coverage(done) >= 0.99\nexpect "cat_vs_dog_3" -> cat\n'
    )
    code, out = cli("test", str(policy), "--db", str(db))
    assert code == 1 and "FAIL" in out and "1 of 3 expectations hold" in out
    (tmp_path / "cats_dogs.expect.lql").write_text("expect acuracy(done) >= 0.99\nlet x = 1\n")
    code, out = cli("test", str(policy), "--db", str(db))
    assert code == 1
    assert (
        "cats_dogs.expect.lql:1:8: error: unknown metric 'acuracy'" in out
        and "did you mean 'accuracy'" in out
    )
    assert "only expect statements belong in cats_dogs.expect.lql" in out


def test_watch_ingests_and_applies_each_batch(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    folder = generate_images(tmp_path / "incoming", per_class=4)
    policy = tmp_path / "p.lql"
    policy.write_text(
        "labels cat, dog\n"
        'embedding clip = open_clip("labelql-tiny", random_weights=true)\n'
        'cat IF text("a photo of a cat") > text("a photo of a dog") -> review\n'
        'dog IF text("a photo of a dog") >= text("a photo of a cat") -> review\n'
    )
    db = tmp_path / "w.duckdb"
    code, out = cli("watch", str(folder), str(policy), "--db", str(db), "--batches", "1", "--interval", "0.1")
    assert code == 0, out
    assert "+8 rows" in out and "review 8" in out
    generate_images(tmp_path / "more", per_class=2, seed=1)
    for f in (tmp_path / "more").rglob("*.jpg"):
        f.rename(folder / f.parent.name / f"new-{f.name}")
    code, out = cli("watch", str(folder), str(policy), "--db", str(db), "--batches", "1", "--interval", "0.1")
    assert code == 0 and "+4 rows" in out, out
    with Store.open(db, read_only=True) as s:
        assert s.con.execute("SELECT kind, rows_routed FROM runs ORDER BY id").fetchall() == [
            ("apply", 8),
            ("apply", 4),
        ]


def test_the_repositorys_expectations_hold_on_the_demo(demo_db: Path, tmp_path: Path) -> None:
    db = copy_store(demo_db, tmp_path / "c")
    code, out = cli("test", str(POLICY), "--db", str(db), "--json")
    assert code == 0, out
    assert len(json.loads(out)["expectations"]) == 4
    code, out = cli("check", str(REPO / "rules" / "cats_dogs.expect.lql"))
    assert code == 0 and "ok (4 expectations)" in out


def test_scores_are_extended_for_added_rows_and_equal_a_full_recompute(tmp_path: Path) -> None:
    from labelql.checker import check_text
    from labelql.demo import add_demo_rows, build_demo_store
    from labelql.prepare import prepare
    from labelql.signals import ScoreContext, ensure_scores, policy_signals

    policy = check_text(
        "labels cat, dog\n"
        'embedding clip = simulated("cats_dogs", seed=0)\n'
        'anchors dogs = "cat_vs_dog_3", "cat_vs_dog_8"\n'
        'cat IF text("photo of a cat") > 0.6 -> done\n'
        "dog IF similar(dogs) > 0.8 OR near(dogs, 0.9) >= 1 -> review\n",
        "p.lql",
    )
    db = tmp_path / "s.duckdb"
    build_demo_store(db, rows=200)
    with Store.open(db) as s:
        first = prepare(s, policy)
    assert [x.rows for x in first.signals] == [200, 200, 200]
    add_demo_rows(db, 200, 300)
    with Store.open(db) as s:
        second = prepare(s, policy)
        # Only the 100 new rows were scored; every signal is current again (a later run is a cache hit).
        assert [x.rows for x in second.signals] == [100, 100, 100]
        assert all(x.cached for x in prepare(s, policy).signals)
        extended = dict(s.con.execute("SELECT signal || key, value FROM scores").fetchall())
        info = {"clip": s.space("clip")}
        ensure_scores(ScoreContext(s, info, lambda _: None), policy_signals(policy), force=True)  # type: ignore[arg-type]
        full = dict(s.con.execute("SELECT signal || key, value FROM scores").fetchall())
    assert len(full) == 900 and extended.keys() == full.keys()
    assert max(abs(extended[k] - full[k]) for k in full) < 1e-6


def test_relabel_routes_every_row_again_and_leaves_gold_alone(halves: Path, tmp_path: Path) -> None:
    db = copy_store(halves, tmp_path / "c")
    with Store.open(db, read_only=True) as s:
        gold_before = s.con.execute("SELECT count(*), sum(hash(key || label)) FROM gold").fetchall()
    code, out = cli("apply", str(POLICY), "--db", str(db), "--relabel", "--json")
    assert code == 0, out
    assert json.loads(out)["rows"] == DEMO_ROWS
    with Store.open(db, read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM applied WHERE run_id = 3").fetchall() == [(DEMO_ROWS,)]
        assert s.con.execute("SELECT count(*), sum(hash(key || label)) FROM gold").fetchall() == gold_before
