"""Rewrite the walk-through in docs/repl.md from a real run of docs/walkthrough.repl on the demo database.

    make demo                                   # builds demo.duckdb (simulated data)
    python docs/gen_repl.py --db demo.duckdb    # rewrites docs/repl.md

Every output block in docs/repl.md is what the REPL printed in that run (times included).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

from rich.console import Console

from labelql.repl import answer
from labelql.session import Session, split_inputs

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

START = "<!-- walkthrough:start (docs/gen_repl.py writes this part) -->\n"
END = "<!-- walkthrough:end -->\n"


def sections(script: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for block in script.split("\n# ")[1:]:
        title, _, body = block.partition("\n")
        if title[:1].isdigit():
            out.append((title, split_inputs(body)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="demo.duckdb")
    args = ap.parse_args()
    script = (DOCS / "walkthrough.repl").read_text()
    os.chdir(REPO)  # the policy's name as users type it: docs/cats_dogs_base.lql
    session = Session(Path(args.db).resolve(), "docs/cats_dogs_base.lql")
    con = Console(
        file=io.StringIO(), record=True, width=140, color_system=None, force_terminal=False, soft_wrap=False
    )
    parts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, inputs in sections(script):
            parts.append(f"\n### {title}\n\n```text\n")
            for item in inputs:
                shown = item
                if item.startswith(":save "):
                    item = f":save {Path(tmp) / item.split()[1]}"
                first, *rest = shown.split("\n")
                con.print(f"lql> {first}", highlight=False, markup=False)
                for line in rest:
                    con.print(f"...  {line}", highlight=False, markup=False)
                answer(session, item, con)
            text = con.export_text(clear=True).replace(tmp + "/", "")
            parts.append("\n".join(line.rstrip() for line in text.splitlines()) + "\n```\n")
    doc = (DOCS / "repl.md").read_text()
    before, after = doc.split(START)[0], doc.split(END)[1]
    (DOCS / "repl.md").write_text(before + START + "".join(parts).strip("\n") + "\n" + END + after)
    print("wrote docs/repl.md")


if __name__ == "__main__":
    main()
