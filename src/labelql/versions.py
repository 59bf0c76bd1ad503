"""Policy versions: the git commit a run's policy came from, and the sides ``labelql diff`` compares.

A side is a policy file, a policy at a git revision (``git:REV:path``), or a stored run (``run:ID`` or a
bare number). Git is called as a program (``git show``, ``git log``), never required: outside a
repository a run simply has no commit.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from labelql import policy as P
from labelql.checker import check_file
from labelql.diagnostics import LabelQLError
from labelql.store import Store


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_commit(path: str, text: str | None = None) -> str | None:
    """The last commit that touched ``path``; ``+uncommitted`` is appended when ``text`` differs from
    the committed file. None outside a git repository or for an untracked file."""
    p = Path(path)
    if not p.is_file():
        return None
    folder = p.resolve().parent
    log = _git(folder, "log", "-1", "--format=%H", "--", p.name)
    if log is None or log.returncode != 0 or not log.stdout.strip():
        return None
    commit = log.stdout.strip()
    if text is not None:
        show = _git(folder, "show", f"HEAD:./{p.name}")
        if show is None or show.returncode != 0 or show.stdout != text:
            return commit + "+uncommitted"
    return commit


@dataclass
class Side:
    """One side of a diff: a checked policy to run, or a stored run's decisions."""

    spec: str
    label: str
    policy: P.CheckedPolicy | None = None
    run_id: int | None = None


def load_side(spec: str, store: Store) -> Side:
    """Resolve ``spec``: ``run:ID`` or ``ID`` (a stored run), ``git:REV:path``, or a policy file."""
    run = spec.removeprefix("run:")
    if run.isdigit():
        rows = store.con.execute(
            "SELECT id, policy_path, created_at, policy_text FROM runs WHERE id = ?", [int(run)]
        ).fetchall()
        if not rows:
            last = store.con.execute("SELECT max(id) FROM runs").fetchall()[0][0]
            raise LabelQLError(
                f"no run {run} in {store.path}",
                hint=f"runs are numbered 1 to {last}: labelql runs"
                if last
                else "no runs yet: labelql run POLICY",
            )
        _, path, at, text = rows[0]
        try:  # the run's own policy text, for the rules it had (its imports may have moved since)
            policy = check_file(path, text)
        except LabelQLError:
            policy = None
        return Side(spec, f"run {run} ({path}, {at:%Y-%m-%d %H:%M})", policy=policy, run_id=int(run))
    if spec.startswith("git:"):
        rev, sep, path = spec[4:].partition(":")
        if not sep or not rev or not path:
            raise LabelQLError(
                f"bad git spec {spec!r}", hint="write git:REV:path, e.g. git:HEAD~1:rules/cats_dogs.lql"
            )
        p = Path(path)
        folder = p.resolve().parent
        show = _git(folder, "show", f"{rev}:./{p.name}")
        if show is None:
            raise LabelQLError("git is not installed", hint="compare policy files or run ids instead")
        if show.returncode != 0:
            raise LabelQLError(f"cannot read {path} at {rev}: {show.stderr.strip().splitlines()[-1]}")
        commit = _git(folder, "rev-parse", "--short", rev)
        short = commit.stdout.strip() if commit and commit.returncode == 0 else rev
        return Side(spec, f"{path} at {rev} ({short})", policy=check_file(path, show.stdout))
    return Side(spec, spec, policy=check_file(spec))
