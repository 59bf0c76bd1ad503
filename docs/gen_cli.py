"""Write docs/cli.md from the command line's own help (tests/test_docs.py checks they agree)."""

from __future__ import annotations

from pathlib import Path

import click

from labelql.cli import main

HEADER = """# Command reference

Generated from the command line's own `--help` by `python docs/gen_cli.py`; `tests/test_docs.py` fails
when this page and the commands disagree.
"""


def commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name in sorted(group.commands):
        cmd = group.commands[name]
        out.append((f"{prefix} {name}", cmd))
        if isinstance(cmd, click.Group):
            out.extend(commands(cmd, f"{prefix} {name}"))
    return out


def render() -> str:
    parts = [HEADER]
    for path, cmd in [("labelql", main), *commands(main, "labelql")]:
        ctx = click.Context(
            cmd, info_name=path, terminal_width=100, max_content_width=100, **main.context_settings
        )
        text = cmd.get_help(ctx)
        parts.append(f"## `{path}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    out = Path(__file__).with_name("cli.md")
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
