"""The ``labelql`` command line: a thin click layer over the stage modules.

Heavy modules (duckdb, pyarrow, PIL, and later torch) are imported inside the commands that need
them, so ``labelql --help`` and ``labelql check`` start fast.  Every :class:`LabelQLError` is
printed as a message (with position and caret where it has one), never as a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from labelql import __version__
from labelql.diagnostics import LabelQLError

if TYPE_CHECKING:
    from rich.console import Console

    from labelql.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Tables are wide: when output goes to a file or a pipe, don't squeeze them into 80 columns.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


class LabelQLGroup(click.Group):
    """Turns LabelQL errors into messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabelQLError as e:
            if ctx.meta.get("labelql.json"):
                _print_json({"ok": False, **e.to_json()})
            else:
                click.echo(e.render(), err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def db_option(f: F) -> F:
    return click.option(
        "--db",
        "db",
        envvar="LABELQL_DB",
        default="labelql.duckdb",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The LabelQL database file (env LABELQL_DB).",
    )(f)


def json_option(f: F, help: str = "Print one JSON document instead of tables.") -> F:
    def mark(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        ctx.meta["labelql.json"] = value
        return value

    return click.option("--json", "as_json", is_flag=True, callback=mark, expose_value=True, help=help)(f)


@contextmanager
def open_store(db: Path, create: bool = False, read_only: bool = False) -> Iterator[Store]:
    from labelql.store import Store

    store = Store.open(db, create=create, read_only=read_only)
    try:
        yield store
    finally:
        store.close()


@click.group(cls=LabelQLGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labelql")
def main() -> None:
    """LabelQL: labeling policies as code.

    Ingest a dataset into one DuckDB file, write a policy (.lql) that says which label each row
    gets and whether it goes to done, review or manual, and check it.
    """


# -- store ---------------------------------------------------------------------------------------
@main.command()
@db_option
def init(db: Path) -> None:
    """Create an empty LabelQL database (or bring an old one up to date)."""
    from labelql.store import SCHEMA_VERSION

    existed = db.exists()
    with open_store(db, create=True):
        pass
    verb = "up to date" if existed else "created"
    click.echo(f"{db}: {verb} (schema version {SCHEMA_VERSION})")


@main.command()
@click.argument("source")
@db_option
@click.option("--labels-from-dirs", is_flag=True, help="Sub-folder names are gold labels (ImageFolder).")
@click.option("--key-prefix", default="", help="Prefix for derived global keys.")
@click.option(
    "--verify",
    type=click.Choice(["header", "full"]),
    default="header",
    show_default=True,
    help="header: parse headers and check files end where they should; full: decode every pixel.",
)
@click.option(
    "--max-pixels", type=int, default=None, help="Refuse images larger than this (decompression bombs)."
)
@click.option("--strict", is_flag=True, help="Any broken input aborts the ingest; nothing is written.")
@click.option("--update", is_flag=True, help="Update rows whose URI or bytes changed.")
@click.option("--source", "source_tag", default=None, help="Source tag stored with each row.")
@click.option("--workers", type=int, default=None, help="Reader processes (default: one per core).")
@click.option("--image-column", default=None, help="Hugging Face: the image column.")
@click.option("--label-column", default=None, help="Hugging Face: the label column.")
@click.option("--split", default=None, help="Hugging Face: the split of a saved DatasetDict.")
@json_option
def ingest(
    source: str,
    db: Path,
    labels_from_dirs: bool,
    key_prefix: str,
    verify: str,
    max_pixels: int | None,
    strict: bool,
    update: bool,
    source_tag: str | None,
    workers: int | None,
    image_column: str | None,
    label_column: str | None,
    split: str | None,
    as_json: bool,
) -> None:
    """Ingest SOURCE: a folder of images, a manifest (.csv/.parquet/.jsonl), a dataset saved with
    save_to_disk, or hf:NAME[:split]."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from labelql.images import DEFAULT_MAX_PIXELS
    from labelql.ingest import IngestOptions
    from labelql.ingest import ingest as run_ingest

    options = IngestOptions(
        key_prefix=key_prefix,
        labels_from_dirs=labels_from_dirs,
        verify=verify,  # type: ignore[arg-type]
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        strict=strict,
        update=update,
        source_tag=source_tag,
        workers=workers,
        image_column=image_column,
        label_column=label_column,
        split=split,
    )
    progress = Progress(
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
        disable=as_json,
    )
    with open_store(db, create=True) as store, progress:
        task = progress.add_task("ingest", total=None)
        report = run_ingest(
            store,
            source,
            options,
            on_total=lambda n: progress.update(task, total=n),
            progress=lambda n: progress.advance(task, n),
        )
    if as_json:
        _print_json(report.to_json())
        return
    _print_ingest(report)


def _print_ingest(report: Any) -> None:
    from rich.table import Table

    con = _console()
    t = Table(title=f"ingest {report.source}", show_header=True)
    for col in ("scanned", "added", "unchanged", "updated", "changed (not updated)", "errors", "gold labels"):
        t.add_column(col, justify="right")
    t.add_row(
        *(
            str(x)
            for x in (
                report.scanned,
                report.added,
                report.unchanged,
                report.updated,
                len(report.changed_not_updated),
                len(report.errors),
                report.gold_added,
            )
        )
    )
    con.print(t)
    if report.changed_not_updated:
        shown = ", ".join(report.changed_not_updated[:5])
        con.print(
            f"{len(report.changed_not_updated)} rows changed on disk and were kept as they were "
            f"({shown}{', ...' if len(report.changed_not_updated) > 5 else ''}); "
            "re-run with --update to take the new data.",
            markup=False,
        )
    if report.errors:
        con.print(
            f"{len(report.errors)} inputs skipped (recorded in ingest_errors); the first ones:", markup=False
        )
        et = Table(show_header=True)
        et.add_column("path / key")
        et.add_column("reason")
        for key, path, msg in report.errors[:10]:
            et.add_row(path or key or "", msg)
        con.print(et)


@main.group()
def embeddings() -> None:
    """Embedding spaces: import vectors made elsewhere."""


@embeddings.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--space", required=True, help="The space's name (one dimension per space).")
@click.option("--model-id", required=True, help="The model that made the vectors.")
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path),
    default=None,
    help=".npy only: a text file with one key per line.",
)
@click.option("--key-column", default=None, help="Parquet: the key column.")
@click.option("--vector-column", default=None, help="Parquet: the vector column.")
@click.option("--replace", is_flag=True, help="Replace the space if it exists.")
@db_option
@json_option
def embeddings_import(
    file: Path,
    space: str,
    model_id: str,
    keys_file: Path | None,
    key_column: str | None,
    vector_column: str | None,
    replace: bool,
    db: Path,
    as_json: bool,
) -> None:
    """Import vectors from .npy (+ keys), .npz or Parquet into SPACE."""
    from labelql.vectors import import_embeddings

    with open_store(db) as store:
        report = import_embeddings(
            store,
            file,
            space=space,
            model_id=model_id,
            replace=replace,
            keys_file=keys_file,
            key_column=key_column,
            vector_column=vector_column,
        )
    if as_json:
        _print_json(report.to_json())
        return
    con = _console()
    con.print(
        f"{report.space}: {report.stored} vectors stored from {report.read} read"
        f"{' (space replaced)' if report.replaced else ''}"
        f"{f', {report.already_present} already present' if report.already_present else ''}"
        f", {len(report.errors)} skipped",
        markup=False,
    )
    for key, msg in report.errors[:10]:
        con.print(f"  {key}: {msg}", markup=False)


@main.group()
def gold() -> None:
    """Ground-truth labels used for evaluation."""


@gold.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--source", default="import", show_default=True, help="Where the labels come from (e.g. audit)."
)
@db_option
@json_option
def gold_import(file: Path, source: str, db: Path, as_json: bool) -> None:
    """Import (key, label) rows from CSV or Parquet."""
    from labelql.vectors import import_gold

    with open_store(db) as store:
        report = import_gold(store, file, source)
    if as_json:
        _print_json(report)
        return
    con = _console()
    con.print(
        f"gold ({source}): {report['stored']} labels stored from {report['read']} read, "
        f"{len(report['errors'])} skipped",
        markup=False,
    )
    for e in report["errors"][:10]:
        con.print(f"  {e['key']}: {e['message']}", markup=False)


@main.command()
@db_option
@json_option
def info(db: Path, as_json: bool) -> None:
    """Rows, errors, embedding spaces and gold coverage of a database."""
    with open_store(db, read_only=True) as store:
        data = store.info()
    if as_json:
        _print_json(data)
        return
    print_info(data)


def print_info(data: dict[str, Any]) -> None:
    from rich.table import Table

    con = _console()
    kinds = ", ".join(f"{n} {k}" for k, n in data["rows_by_kind"].items()) or "none"
    errors = ", ".join(f"{n} at {stage}" for stage, n in data["errors"].items()) or "none"
    con.print(f"[bold]{data['db']}[/bold] (schema v{data['schema_version']})")
    con.print(f"rows: {data['rows']} ({kinds})   errors: {errors}", markup=False)
    if data["spaces"]:
        t = Table(title="embedding spaces")
        for col in ("space", "provider", "model", "dim", "vectors", "coverage", "fingerprint"):
            t.add_column(col)
        for s in data["spaces"]:
            model = s["model_id"] + (" (random weights: tests only)" if s["random_weights"] else "")
            t.add_row(
                s["name"],
                s["provider"],
                model,
                str(s["dim"]),
                str(s["vectors"]),
                f"{s['coverage']:.1%}",
                s["fingerprint"],
            )
        con.print(t)
    else:
        con.print("embedding spaces: none")
    g = data["gold"]
    if g["labels"]:
        t = Table(title=f"gold labels: {g['rows_with_gold']} rows ({g['coverage']:.1%})")
        for col in ("source", "label", "rows"):
            t.add_column(col)
        for row in g["labels"]:
            t.add_row(row["source"], row["label"], str(row["rows"]))
        con.print(t)
    else:
        con.print("gold labels: none")


# -- language ------------------------------------------------------------------------------------
@main.command()
@click.argument("policies", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
def check(policies: tuple[Path, ...], as_json: bool) -> None:
    """Check policies: every error and warning, with its position."""
    from labelql.checker import check_file
    from labelql.diagnostics import DiagnosticError

    results: list[dict[str, Any]] = []
    failed = False
    for path in policies:
        try:
            if path.name.endswith(".expect.lql"):
                # Expectations are checked against the policy beside them (cats_dogs.lql).
                from labelql.checker import check_with_expectations

                owner = path.with_name(path.name.removesuffix(".expect.lql") + ".lql")
                if not owner.is_file():
                    raise LabelQLError(f"{path}: no policy {owner.name} beside it to check against")
                policy, found, _ = check_with_expectations(owner)
                results.append({"file": str(path), "ok": True, "rules": 0, "diagnostics": []})
                if not as_json:
                    click.echo(f"{path}: ok ({len(found) - len(policy.expectations)} expectations)")
                continue
            policy = check_file(path)
        except DiagnosticError as e:
            failed = True
            results.append(
                {"file": str(path), "ok": False, "diagnostics": [d.to_json() for d in e.diagnostics]}
            )
            if not as_json:
                click.echo(e.render(), err=True)
            continue
        except LabelQLError as e:
            failed = True
            results.append(
                {"file": str(path), "ok": False, "diagnostics": [{"severity": "error", "message": e.message}]}
            )
            if not as_json:
                click.echo(e.render(), err=True)
            continue
        results.append(
            {
                "file": str(path),
                "ok": True,
                "rules": len(policy.rules),
                "diagnostics": [w.to_json() for w in policy.warnings],
            }
        )
        if not as_json:
            for w in policy.warnings:
                click.echo(w.render(policy.sources), err=True)
            n_warn = len(policy.warnings)
            click.echo(
                f"{path}: ok ({len(policy.rules)} rules, {len(policy.lets)} lets"
                f"{f', {n_warn} warnings' if n_warn else ''})"
            )
    if as_json:
        _print_json({"ok": not failed, "files": results})
    if failed:
        sys.exit(1)


@main.command()
@click.argument("policies", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--check", "check_only", is_flag=True, help="Change nothing; exit 1 if a file is not formatted."
)
def fmt(policies: tuple[Path, ...], check_only: bool) -> None:
    """Format policies in place in the one canonical layout ('-' reads stdin, writes stdout)."""
    from labelql.formatter import format_source
    from labelql.parser import read_source

    unformatted = []
    for path in policies:
        if str(path) == "-":
            click.echo(format_source(sys.stdin.read(), "<stdin>"), nl=False)
            continue
        text = read_source(path)
        out = format_source(text, str(path))
        if out != text:
            unformatted.append(path)
            if not check_only:
                path.write_text(out, encoding="utf-8")
                click.echo(f"formatted {path}")
    if check_only and unformatted:
        for p in unformatted:
            click.echo(f"would reformat {p}", err=True)
        sys.exit(1)


@main.command()
@click.argument("policy", type=click.Path(path_type=Path))
@click.option(
    "--stage",
    type=click.Choice(["tokens", "ast", "policy", "plan", "sql"]),
    default="policy",
    show_default=True,
    help="Which stage of the compiler to show.",
)
@json_option
def explain(policy: Path, stage: str, as_json: bool) -> None:
    """Show a policy as one stage of the compiler sees it."""
    from labelql.parser import read_source

    text = read_source(policy)
    if stage == "tokens":
        from labelql.parser import tokenize

        toks, diags, _ = tokenize(text, str(policy))
        rows = [{"at": f"{t.line}:{t.col}", "type": t.type, "value": t.value} for t in toks if t.type != "NL"]
        if as_json:
            _print_json(rows)
        else:
            for r in rows:
                click.echo(f"{r['at']:>8}  {r['type']:<10} {r['value']!r}")
        if diags:
            from labelql.diagnostics import DiagnosticError, SourceMap

            sources = SourceMap()
            sources.add(str(policy), text)
            raise DiagnosticError(diags, sources)
        return
    if stage == "ast":
        from labelql.parser import parse

        module = parse(text, str(policy))
        data = [s.to_json() for s in module.statements]
        if as_json:
            _print_json(data)
        else:
            from rich.pretty import Pretty

            _console().print(Pretty(module.statements, expand_all=False))
        return
    from labelql.checker import check_file

    checked = check_file(policy, text)
    if stage == "policy":
        _print_json(checked.to_json())
        return
    from labelql.compiler import decide_select, features_select, render
    from labelql.plan import build_plan

    plan = build_plan(checked)
    if stage == "plan":
        _print_json(plan.to_json())
        return
    # Cluster runs are known only against a database: the SQL shows run id 0 in their place.
    runs = {c.source: 0 for c in plan.columns if c.kind == "cluster"}
    features = render(features_select(plan, runs), pretty=True)
    decide = render(decide_select(plan, "_features"), pretty=True)
    if as_json:
        _print_json({"features": features, "decide": decide})
    else:
        click.echo(f"-- inputs, one row per data row\nCREATE TEMP TABLE _features AS\n{features};\n")
        click.echo(
            f"-- every let and rule, then the routing decision\nCREATE TEMP TABLE _assign AS\n{decide};"
        )


# -- signals -------------------------------------------------------------------------------------
def _progress_bar(as_json: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f} rows/s" if speed else "")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
        disable=as_json,
    )


def _step_progress(bar: Any) -> Any:
    """A ``prepare`` progress callback: one bar per step (``embed clip``, ``map umap``)."""
    tasks: dict[str, Any] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total or None)
        bar.update(tasks[what], completed=done, total=total or None)

    return progress


def _space_from_options(
    store: Store,
    space: str,
    policy: Path | None,
    open_clip: str | None,
    pretrained: str | None,
    checkpoint: str | None,
    random_weights: bool,
    sentence_transformer: str | None,
    precision: str | None,
) -> Any:
    from labelql.diagnostics import Span
    from labelql.policy import SpaceDef

    span = Span("<command line>", 0, 0, 0, 0)
    if policy is not None:
        from labelql.checker import check_file

        checked = check_file(policy)
        if space not in [s.name for s in checked.spaces]:
            raise LabelQLError(
                f"{policy} declares no space '{space}'",
                hint=f"spaces: {', '.join(s.name for s in checked.spaces) or 'none'}",
            )
        return checked.space(space)
    if open_clip:
        sources = [x for x in (pretrained, checkpoint, random_weights or None) if x]
        if len(sources) != 1:
            raise LabelQLError(
                "--open-clip needs exactly one of --pretrained TAG, --checkpoint PATH, --random-weights"
            )
        params: dict[str, Any] = {"model": open_clip}
        if pretrained:
            params["pretrained"] = pretrained
        if checkpoint:
            params["checkpoint"] = checkpoint
        if random_weights:
            params["random_weights"] = True
        if precision:
            params["precision"] = precision
        return SpaceDef(space, "open_clip", tuple(sorted(params.items())), False, span)
    if sentence_transformer:
        return SpaceDef(space, "sentence_transformer", (("model", sentence_transformer),), False, span)
    info = store.space(space)
    if info is None or info.provider not in ("open_clip", "sentence_transformer"):
        raise LabelQLError(
            f"say which model makes space '{space}'",
            hint="--policy POLICY, --open-clip MODEL --pretrained TAG, or --sentence-transformer NAME",
        )
    params = {
        k: v
        for k, v in info.params.items()
        if k in ("model", "pretrained", "checkpoint", "random_weights", "precision")
    }
    return SpaceDef(space, info.provider, tuple(sorted(params.items())), False, span)


@main.command()
@click.option("--space", required=True, help="The space to fill (created when missing).")
@click.option(
    "--policy", type=click.Path(path_type=Path), default=None, help="Take the model from this policy."
)
@click.option("--open-clip", "open_clip", default=None, help="An open_clip model name, e.g. ViT-B-32.")
@click.option("--pretrained", default=None, help="open_clip pretrained tag (downloaded when online).")
@click.option("--checkpoint", default=None, help="open_clip weights from a local file.")
@click.option("--random-weights", is_flag=True, help="open_clip with random weights (tests only).")
@click.option("--sentence-transformer", default=None, help="A sentence-transformers model, for text rows.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True
)
@click.option(
    "--precision", type=click.Choice(["fp32", "bf16"]), default=None, help="Model precision (default fp32)."
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=None, help="Image decoding processes (default: cores - 1).")
@click.option("--replace", is_flag=True, help="Re-embed when the space holds vectors from another model.")
@click.option("-v", "--verbose", is_flag=True, help="Print a line per committed batch.")
@db_option
@json_option
def embed(
    space: str,
    policy: Path | None,
    open_clip: str | None,
    pretrained: str | None,
    checkpoint: str | None,
    random_weights: bool,
    sentence_transformer: str | None,
    device: str,
    precision: str | None,
    batch_size: int,
    workers: int | None,
    replace: bool,
    verbose: bool,
    db: Path,
    as_json: bool,
) -> None:
    """Embed every row that has no vector in SPACE yet (resumable: safe to kill and re-run)."""
    from labelql.embed import embed_rows, load_encoder

    with open_store(db) as store:
        space_def = _space_from_options(
            store,
            space,
            policy,
            open_clip,
            pretrained,
            checkpoint,
            random_weights,
            sentence_transformer,
            precision,
        )
        encoder = load_encoder(space_def, device, precision)
        for notice in encoder.notices:
            click.echo(f"notice: {notice}", err=True)
        with _progress_bar(as_json or verbose) as bar:
            task = bar.add_task(f"embed {space}", total=None)

            def on_batch(k: int, done: int) -> None:
                bar.advance(task, k)
                if verbose:
                    click.echo(f"committed {done}", err=True)

            report = embed_rows(
                store,
                encoder,
                batch_size=batch_size,
                workers=workers,
                replace=replace,
                on_total=lambda n: bar.update(task, total=n),
                on_batch=on_batch,
            )
    if as_json:
        _print_json(report.to_json())
        return
    rate = f" ({report.embedded / report.seconds:,.1f} rows/s)" if report.seconds and report.embedded else ""
    click.echo(
        f"{space}: {report.embedded} rows embedded of {report.todo} to do{rate}, {len(report.errors)} errors"
    )
    for key, msg in report.errors[:10]:
        click.echo(f"  {key}: {msg}")


@main.command()
@click.argument("policy", type=click.Path(path_type=Path))
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True
)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None, help="Model precision.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=None, help="Image decoding processes (default: cores - 1).")
@click.option("--refit", is_flag=True, help="Recompute maps and clusters from scratch.")
@click.option("--replace", is_flag=True, help="Re-embed spaces that hold vectors from another model.")
@db_option
@json_option
def prepare(
    policy: Path,
    device: str,
    precision: str | None,
    batch_size: int,
    workers: int | None,
    refit: bool,
    replace: bool,
    db: Path,
    as_json: bool,
) -> None:
    """Compute exactly the signals POLICY needs: embeddings, scores, maps, clusters."""
    from labelql.checker import check_file
    from labelql.prepare import PrepareOptions
    from labelql.prepare import prepare as run_prepare

    checked = check_file(policy)
    options = PrepareOptions(
        device=device,
        precision=precision,
        batch_size=batch_size,
        workers=workers,
        refit=refit,
        replace=replace,
    )
    with open_store(db) as store, _progress_bar(as_json) as bar:
        report = run_prepare(store, checked, options, progress=_step_progress(bar))
    if as_json:
        _print_json(report.to_json())
        return
    _print_prepare(report)


def _print_prepare(report: Any) -> None:
    from rich.table import Table

    con = _console()
    for e in report.embeddings:
        con.print(
            f"embed {e.space}: {e.embedded} of {e.todo} rows ({e.seconds:.1f} s), {len(e.errors)} errors",
            markup=False,
        )
        for n in e.notices:
            con.print(f"  notice: {n}", markup=False)
    t = Table(title="signals")
    for col in ("signal", "rows", "cache", "time"):
        t.add_column(col)
    from labelql.plot import signal_labels

    for (label, _), s in zip(signal_labels([s.id for s in report.signals]), report.signals, strict=True):
        t.add_row(
            label, "" if s.cached else str(s.rows), "hit" if s.cached else "computed", f"{s.seconds:.3f} s"
        )
    con.print(t)
    for m in report.maps:
        how = (
            "cache hit"
            if m.cache_hit
            else (
                f"fitted on {m.fitted} rows" if m.fitted else f"placed {m.transformed} new rows by transform"
            )
        )
        con.print(f"map {m.projection}: {how} ({m.seconds:.2f} s)", markup=False)
    for c in report.clusters:
        names = ", ".join(f"{i.name or 'unnamed'} ({i.size})" for i in c.clusters)
        con.print(f"clusters {c.projection}: {names}; {c.noise} unclustered", markup=False)
    con.print(f"prepared in {report.seconds:.1f} s", markup=False)


@main.command("clusters")
@click.argument("policy", type=click.Path(path_type=Path))
@db_option
@json_option
def clusters_cmd(policy: Path, db: Path, as_json: bool) -> None:
    """Each cluster's size, name, how it was named, and its gold purity (run prepare first)."""
    from rich.table import Table

    from labelql.checker import check_file
    from labelql.clusters import gold_purity

    checked = check_file(policy)
    out = []
    with open_store(db, read_only=True) as store:
        for cset in checked.cluster_sets:
            run_id = _latest_cluster_run(store, checked, cset.projection)
            summary = json.loads(
                store.con.execute("SELECT summary FROM cluster_runs WHERE id = ?", [run_id]).fetchall()[0][0]
            )
            purity = gold_purity(store, run_id)
            sizes = dict(
                store.con.execute(
                    "SELECT cluster, count(*) FROM cluster_assign WHERE run_id = ? GROUP BY cluster", [run_id]
                ).fetchall()
            )
            rows = []
            for c in summary["clusters"]:
                p = purity.get(c["cluster"])
                rows.append(
                    {
                        "cluster": c["cluster"],
                        "size": sizes.get(c["cluster"], 0),
                        "name": c["name"],
                        "how": c["how"],
                        "evidence": c["evidence"],
                        "gold_majority": p[0] if p else None,
                        "gold_purity": p[1] if p else None,
                        "gold_rows": p[2] if p else 0,
                    }
                )
            out.append(
                {
                    "projection": cset.projection,
                    "min_size": summary["min_size"],
                    "unclustered": sizes.get(-1, 0),
                    "clusters": rows,
                }
            )
    if as_json:
        _print_json(out)
        return
    con = _console()
    for proj in out:
        t = Table(
            title=f"clusters on {proj['projection']} (min_size {proj['min_size']}, "
            f"{proj['unclustered']} rows unclustered)"
        )
        for col in ("cluster", "size", "name", "named by", "evidence", "gold majority", "purity"):
            t.add_column(col)
        for r in proj["clusters"]:
            ev = ", ".join(
                f"{k}={v:+.3f}" if r["how"] != "anchors" else f"{k}={v:g}" for k, v in r["evidence"].items()
            )
            t.add_row(
                str(r["cluster"]),
                str(r["size"]),
                r["name"] or "-",
                r["how"],
                ev,
                r["gold_majority"] or "-",
                f"{r['gold_purity']:.1%} of {r['gold_rows']}" if r["gold_purity"] is not None else "-",
            )
        con.print(t)


def _latest_cluster_run(store: Store, checked: Any, projection: str) -> int:
    from labelql.engine import latest_cluster_runs

    run = latest_cluster_runs(store, checked).get(projection)
    if run is None:
        raise LabelQLError(f"no clusters computed for {projection} yet", hint="run: labelql prepare POLICY")
    return run


@main.command()
@click.argument("policy", type=click.Path(path_type=Path))
@click.option("--map", "map_name", required=True, help="The projection to draw.")
@click.option(
    "--color", type=click.Choice(["cluster", "label", "gold", "route"]), default="cluster", show_default=True
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="The PNG (or HTML) to write."
)
@click.option(
    "--html", is_flag=True, help="Write a self-contained interactive page (plotly) instead of a PNG."
)
@db_option
def plot(policy: Path, map_name: str, color: str, output: Path, html: bool, db: Path) -> None:
    """Draw the projector view of a map (run prepare first)."""
    from labelql.checker import check_file
    from labelql.maps import full_params
    from labelql.plot import plot_html, plot_png, signal_labels
    from labelql.signals import policy_signals, signal_id, store_space_name

    checked = check_file(policy)
    if map_name not in [p.name for p in checked.projections]:
        raise LabelQLError(
            f"{policy} declares no projection '{map_name}'",
            hint=f"projections: {', '.join(p.name for p in checked.projections) or 'none'}",
        )
    proj = checked.projection(map_name)
    space_name = store_space_name(checked, proj.space)
    with open_store(db, read_only=True) as store:
        rows = store.con.execute(
            "SELECT id FROM maps WHERE space = ? AND kind = ? AND params = ?::JSON ORDER BY id DESC LIMIT 1",
            [space_name, proj.kind, json.dumps(full_params(proj), sort_keys=True)],
        ).fetchall()
        if not rows:
            raise LabelQLError(f"map {map_name} is not computed yet", hint="run: labelql prepare POLICY")
        map_id = int(rows[0][0])
        policy_run = _latest_run(store, checked) if color in ("label", "route") else None
        has_clusters = map_name in [c.projection for c in checked.cluster_sets]
        run_id = _latest_cluster_run(store, checked, map_name) if has_clusters else None
        title = f"{map_name}: {proj.kind} of {proj.space}, coloured by {color}"
        if html:
            sids = [signal_id(s, store_space_name(checked, s.space)) for s in policy_signals(checked)]
            n = plot_html(store, map_id, title, color, run_id, output, signal_labels(sids), policy_run)
        else:
            n = plot_png(store, map_id, title, color, run_id, output, policy_run)
    click.echo(f"wrote {output} ({n} points)")


# -- engine --------------------------------------------------------------------------------------
def cell(v: Any) -> str:
    """A value in a rich table cell: '-' for null, scores to 4 places, text with its markup escaped."""
    from rich.markup import escape

    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return escape(str(v))


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def routes_table(routes: list[dict[str, Any]], title: str | None = None) -> Any:
    """The guide's route table: rows, errors, measured and estimated accuracy, cumulative coverage."""
    from rich.table import Table

    names = {
        "done": "Direct classification (done)",
        "review": "Human in the loop (review)",
        "manual": "Manual classification",
    }
    t = Table(title=title)
    t.add_column("")
    for r in routes:
        t.add_column(names[r["route"]], justify="right")
    t.add_row("# of data rows classified", *[f"{r['rows']:,} ({_pct(r['share'])})" for r in routes])
    t.add_row(
        "# of errors (against gold)",
        *["-" if r["errors"] is None else f"{r['errors']:,} of {r['gold']:,}" for r in routes],
    )
    t.add_row(
        "accuracy, measured [95% CI]",
        *["-" if r["accuracy"] is None else _pct(r["accuracy"], 2) + _ci(r["ci95"]) for r in routes],
    )
    t.add_row("accuracy, estimated (label model)", *[_pct(r.get("estimated_accuracy"), 2) for r in routes])
    t.add_row("cumulative coverage", *[_pct(r["cumulative_coverage"], 2) for r in routes])
    return t


def rules_table(rules: list[dict[str, Any]], title: str = "rules") -> Any:
    """Per rule: matched, coverage, overlaps, conflicts, decided, accuracy against gold and estimated."""
    from rich.table import Table

    numbered = bool(rules) and "n" in rules[0]
    rt = Table(title=title)
    heads = ["#"] if numbered else []
    heads += [
        "rule",
        "label -> route",
        "matched",
        "coverage",
        "overlaps",
        "conflicts",
        "decided",
        "accuracy (gold) [95% CI], n",
        "estimated (model)",
    ]
    for col in heads:
        rt.add_column(col, justify="right" if col not in ("rule", "label -> route") else "left")
    for r in rules:
        measured = (
            "-" if r["accuracy"] is None else f"{_pct(r['accuracy'], 2)}{_ci(r['ci95'])}, {r['gold']:,}"
        )
        rt.add_row(
            *([str(r["n"])] if numbered else []),
            r["rule"],
            f"{r['label']} -> {r['route']}",
            f"{r['matched']:,}",
            _pct(r["coverage"]),
            f"{r['overlaps']:,}",
            f"{r['conflicts']:,}",
            f"{r['decided']:,}",
            measured,
            _pct(r.get("estimated_accuracy"), 2),
        )
    return rt


def print_run(result: Any, title: str, con: Any = None) -> None:
    """The route table in the guide's shape, then rules, lets and labels."""
    from rich.table import Table

    con = con or _console()
    con.print(routes_table(result.routes, title))
    if result.rules:
        con.print(rules_table(result.rules))
    bool_lets = [x for x in result.lets if x["matched"] is not None]
    if bool_lets:
        lt = Table(title="lets")
        for col in ("let", "matched", "coverage", "gold labels of matched rows"):
            lt.add_column(col)
        for x in bool_lets:
            mix = ", ".join(f"{k} {v:,}" for k, v in x["gold_mix"].items()) or "-"
            lt.add_row(x["let"], f"{x['matched']:,}", _pct(x["coverage"]), mix)
        con.print(lt)
    lab = Table(title="labels by route")
    for col in ("label", "done", "review", "manual"):
        lab.add_column(col, justify="right" if col != "label" else "left")
    for x in result.labels:
        lab.add_row(x["label"], f"{x['done']:,}", f"{x['review']:,}", f"{x['manual']:,}")
    con.print(lab)
    con.print(
        f"{result.rows if hasattr(result, 'rows') else result.total:,} rows, {result.gold_rows:,} with gold. "
        "'measured' compares with gold labels (audit > import > ingest); 'estimated' is the label model's "
        "(Dawid-Skene, rules assumed independent given the label): modelled, not measured.",
        markup=False,
    )


def _export(store: Store, plan: Any, path: Path) -> int:
    from labelql.plot import signal_labels

    score_cols = [c for c in plan.columns if c.kind == "score"]
    labels = dict(signal_labels([c.source for c in score_cols]))
    inverse = {sid: lab for lab, sid in labels.items()}
    from labelql.compiler import render, rule_lists

    _, deciding = rule_lists(plan)
    cols = ["key", "label", "route", f"array_to_string({render(deciding)}, ', ') AS rules", "reason"] + [
        c.name for c in score_cols
    ]
    from labelql.store import fetch_arrow

    table = fetch_arrow(
        store.con, f"SELECT {', '.join(cols)} FROM _assign JOIN _features USING (key) ORDER BY key"
    )
    table = table.rename_columns(
        ["key", "label", "route", "rules", "reason"] + [inverse[c.source] for c in score_cols]
    )
    _write_table(table, path)
    return int(table.num_rows)


def _write_table(table: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    elif suffix in (".jsonl", ".ndjson"):
        with path.open("w", encoding="utf-8") as f:
            for rec in table.to_pylist():
                f.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
    else:
        raise LabelQLError(f"don't know how to write {path}", hint="use .parquet, .csv or .jsonl")


@main.command()
@click.argument("policy", type=click.Path(path_type=Path))
@click.option(
    "--export",
    "export_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write key, label, route, rule and scores (.parquet, .csv or .jsonl).",
)
@click.option("--no-keep", is_flag=True, help="Do not store this run.")
@db_option
@json_option
def run(policy: Path, export_path: Path | None, no_keep: bool, db: Path, as_json: bool) -> None:
    """Route every row to done / review / manual and measure every rule."""
    from labelql.checker import check_file
    from labelql.engine import run_policy
    from labelql.plan import build_plan

    checked = check_file(policy)
    with open_store(db) as store:
        result = run_policy(store, checked, keep=not no_keep)
        exported = _export(store, build_plan(checked), export_path) if export_path else None
    if as_json:
        _print_json({**result.to_json(), "exported": exported})
        return
    print_run(result, f"{policy} (run {result.run_id})" if result.run_id else str(policy))
    if exported is not None:
        click.echo(f"wrote {export_path} ({exported:,} rows)")


@main.command()
@click.argument("key")
@click.argument("policy", type=click.Path(path_type=Path))
@db_option
@json_option
def why(key: str, policy: Path, db: Path, as_json: bool) -> None:
    """Every rule and let for one row, each condition's value, and the routing decision."""
    from labelql.checker import check_file
    from labelql.why import explain_row

    checked = check_file(policy)
    with open_store(db) as store:
        report = explain_row(store, checked, key)
    if as_json:
        _print_json(report)
        return
    print_why(report, _console())


def print_why(report: dict[str, Any], con: Any) -> None:
    """One row's decision, then every let and rule with the value of each comparison."""
    con.print(
        f"[bold]{report['key']}[/bold]: {report['label'] or '-'} -> {report['route']}"
        + (f" ({report['reason']})" if report["reason"] else ""),
        highlight=False,
    )
    for section in ("lets", "rules"):
        for item in report[section]:
            mark = "✓" if item["value"] is True else ("✗" if item["value"] is False else "null")
            head = (
                f"let {item['name']}"
                if section == "lets"
                else f"{item['name']}: {item['label']} -> {item['route']}"
            )
            con.print(f"{mark} {head}", markup=False)
            for atom in item["atoms"]:
                con.print(f"    {atom}", markup=False)


@main.command()
@click.argument("policy", type=click.Path(path_type=Path))
@click.option("--per-route", type=int, default=50, show_default=True, help="Rows to draw from each route.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="CSV (or .parquet/.jsonl)."
)
@db_option
def sample(policy: Path, per_route: int, seed: int, output: Path, db: Path) -> None:
    """Draw a stratified random audit sample from the policy's latest run.

    Fill its `label` column and import it with `labelql gold import FILE --source audit`: accuracy per
    route is then measured on the audit, with intervals.
    """
    from labelql.checker import check_file
    from labelql.store import fetch_arrow

    checked = check_file(policy)
    with open_store(db, read_only=True) as store:
        run_id = _latest_run(store, checked)
        table = fetch_arrow(
            store.con,
            (
                "SELECT a.key, r.uri, a.route, a.label AS pre_label, NULL::VARCHAR AS label FROM run_rows a "
                "JOIN rows r ON a.key = r.key WHERE a.run_id = ? "
                "QUALIFY row_number() OVER (PARTITION BY a.route ORDER BY hash(a.key || ?)) <= ? "
                "ORDER BY a.route, a.key"
            ),
            [run_id, str(seed), per_route],
        )
    _write_table(table, output)
    click.echo(
        f"wrote {output}: {table.num_rows} rows from run {run_id} (up to {per_route} per route); "
        "fill 'label', then: labelql gold import " + str(output) + " --source audit"
    )


def _latest_run(store: Store, checked: Any) -> int:
    rows = store.con.execute(
        "SELECT id FROM runs WHERE policy_hash = ? ORDER BY id DESC LIMIT 1", [checked.source_hash]
    ).fetchall()
    if not rows:
        raise LabelQLError("this policy has not been run on this database", hint="run: labelql run POLICY")
    return int(rows[0][0])


@main.group("export")
def export_group() -> None:
    """Export results for other tools."""


@export_group.command("review")
@click.argument("policy", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help=".csv, .parquet or .jsonl"
)
@db_option
def export_review(policy: Path, output: Path, db: Path) -> None:
    """The review queue of the policy's latest run: key, image path, pre-label, rules."""
    from labelql.checker import check_file
    from labelql.store import fetch_arrow

    checked = check_file(policy)
    with open_store(db, read_only=True) as store:
        run_id = _latest_run(store, checked)
        table = fetch_arrow(
            store.con,
            (
                "SELECT a.key, r.uri AS path, a.label AS pre_label, array_to_string(a.rules, ', ') AS rules "
                "FROM run_rows a JOIN rows r ON a.key = r.key WHERE a.run_id = ? AND a.route = 'review' "
                "ORDER BY a.key"
            ),
            [run_id],
        )
    _write_table(table, output)
    click.echo(f"wrote {output}: {table.num_rows} rows to review (run {run_id})")


# -- new data, slices, versions -------------------------------------------------------------------
@main.command()
@click.argument("policy", type=click.Path(path_type=Path))
@click.option("--relabel", is_flag=True, help="Route every row again, not only rows without a label.")
@db_option
@json_option
def apply(policy: Path, relabel: bool, db: Path, as_json: bool) -> None:
    """Route the rows added since the last run or apply, computing only what they lack.

    New rows get their vectors, scores, places on the fitted maps (transform) and clusters; rows with
    a label keep it unless --relabel is given; gold labels are never touched. The assignments are kept
    as a run of kind 'apply', tied to the policy's hash (and git commit).
    """
    from labelql.checker import check_file
    from labelql.engine import apply_policy

    checked = check_file(policy)
    with open_store(db) as store:
        result = apply_policy(store, checked, relabel=relabel)
    if as_json:
        _print_json({**result.to_json(), "kind": "apply"})
        return
    if not result.total:
        click.echo("nothing to apply: every row has a label (use --relabel to route all rows again)")
        return
    print_run(result, f"{policy}: apply (run {result.run_id}), {result.total:,} rows routed")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("policy", type=click.Path(path_type=Path))
@click.option("--labels-from-dirs", is_flag=True, help="Sub-folder names are gold labels (ImageFolder).")
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between looks.")
@click.option("--batches", type=int, default=None, help="Stop after this many batches (default: never).")
@db_option
def watch(
    folder: Path, policy: Path, labels_from_dirs: bool, interval: float, batches: int | None, db: Path
) -> None:
    """Ingest FOLDER and apply POLICY whenever new files appear; one line per batch. Ctrl-C stops."""
    import time

    from labelql.checker import check_file
    from labelql.engine import apply_policy
    from labelql.ingest import IngestOptions
    from labelql.ingest import ingest as ingest_source

    checked = check_file(policy)
    done = 0
    click.echo(f"watching {folder} every {interval:g} s; applying {policy} to {db} (Ctrl-C stops)")
    try:
        while batches is None or done < batches:
            t0 = time.perf_counter()
            try:
                with open_store(db, create=True) as store:
                    report = ingest_source(
                        store, str(folder), IngestOptions(labels_from_dirs=labels_from_dirs)
                    )
                    if report.added:
                        result = apply_policy(store, checked)
            except LabelQLError as e:  # a busy database, a bad batch: say so, keep watching
                click.echo(f"{time.strftime('%H:%M:%S')} {e.render()}", err=True)
                time.sleep(interval)
                continue
            if report.added:
                done += 1
                routes = " · ".join(f"{r['route']} {r['rows']:,}" for r in result.routes)
                bad = f", {len(report.errors)} bad files recorded" if report.errors else ""
                click.echo(
                    f"{time.strftime('%H:%M:%S')} +{report.added:,} rows{bad}: {routes} "
                    f"(run {result.run_id}, {time.perf_counter() - t0:.1f} s)"
                )
                continue
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("stopped")


@main.command("slice")
@click.argument("policy", type=click.Path(path_type=Path))
@click.argument("name")
@click.option("--show", type=int, default=0, help="Print N of its rows with key, path and scores.")
@click.option(
    "--export", "export_path", type=click.Path(path_type=Path), default=None, help=".csv, .parquet or .jsonl"
)
@db_option
@json_option
def slice_cmd(policy: Path, name: str, show: int, export_path: Path | None, db: Path, as_json: bool) -> None:
    """The rows a slice of POLICY selects now: count, examples, export.

    `unlabeled` in a slice means no gold label and no label of record from a kept run or apply;
    `added` is the ingest time.
    """
    from labelql.checker import check_file
    from labelql.diagnostics import did_you_mean
    from labelql.engine import slice_rows

    checked = check_file(policy)
    names = [s.name for s in checked.slices]
    if name not in names:
        raise LabelQLError(
            f"{policy} has no slice '{name}'",
            hint=did_you_mean(name, names)
            or (f"slices: {', '.join(names)}" if names else "declare one: slice NAME = ..."),
        )
    with open_store(db) as store:
        table = slice_rows(store, checked, name)
        total = store.con.execute("SELECT count(*) FROM rows").fetchall()[0][0]
    if export_path:
        _write_table(table, export_path)
    if as_json:
        _print_json(
            {
                "slice": name,
                "rows": table.num_rows,
                "of": total,
                "shown": table.slice(0, show).to_pylist(),
                "exported": str(export_path) if export_path else None,
            }
        )
        return
    click.echo(f"slice {name}: {table.num_rows:,} of {total:,} rows")
    if show:
        from rich.table import Table

        t = Table()
        for col in table.column_names:
            t.add_column(col)
        for row in table.slice(0, show).to_pylist():
            t.add_row(*[cell(v) for v in row.values()])
        _console().print(t)
    if export_path:
        click.echo(f"wrote {export_path} ({table.num_rows:,} rows)")


@main.command()
@click.option("--limit", type=int, default=20, show_default=True)
@db_option
@json_option
def runs(limit: int, db: Path, as_json: bool) -> None:
    """The kept runs, newest first: time, kind, policy, hash, git commit, routes."""
    with open_store(db, read_only=True) as store:
        rows = store.con.execute(
            "SELECT id, created_at, kind, policy_path, policy_hash, git_commit, rows_routed, summary "
            "FROM runs ORDER BY id DESC LIMIT ?",
            [limit],
        ).fetchall()
    out = []
    for rid, at, kind, path, h, commit, n, summary in rows:
        routes = {r["route"]: r["rows"] for r in json.loads(summary)["routes"]}
        out.append(
            {
                "run": rid,
                "at": str(at),
                "kind": kind,
                "policy": path,
                "hash": h,
                "git_commit": commit,
                "rows": n,
                "routes": routes,
            }
        )
    if as_json:
        _print_json(out)
        return
    from rich.table import Table

    t = Table(title=f"runs in {db}")
    for col in ("run", "at", "kind", "policy", "hash", "git commit", "rows", "done", "review", "manual"):
        t.add_column(col, justify="right" if col in ("run", "rows", "done", "review", "manual") else "left")
    for r in out:
        t.add_row(
            str(r["run"]),
            r["at"][:19],
            r["kind"],
            r["policy"],
            r["hash"][:12],
            (r["git_commit"] or "-")[:12]
            + ("+" if r["git_commit"] and r["git_commit"].endswith("+uncommitted") else ""),
            f"{r['rows']:,}",
            *[f"{r['routes'].get(k, 0):,}" for k in ("done", "review", "manual")],
        )
    _console().print(t)


@main.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--show", type=int, default=0, help="List N rows that change.")
@click.option("--markdown", is_flag=True, help="Print markdown to paste into a pull request.")
@db_option
@json_option
def diff_cmd(old: str, new: str, show: int, markdown: bool, db: Path, as_json: bool) -> None:
    """Which rows change label or route between two policy versions, with accuracy per route.

    OLD and NEW are each a policy file, git:REV:path (the file at a git revision), or a run id
    (run:ID or ID).
    """
    from labelql.diff import diff, render_markdown
    from labelql.versions import load_side

    with open_store(db) as store:
        a, b = load_side(old, store), load_side(new, store)
        report = diff(store, a, b, show)
    if as_json:
        _print_json(report)
    elif markdown:
        click.echo(render_markdown(report), nl=False)
    else:
        _print_diff(report)


def _print_diff(d: dict[str, Any]) -> None:
    from rich.table import Table

    con = _console()
    share = d["changed"] / d["rows"] if d["rows"] else 0.0
    con.print(
        f"{d['old']} -> {d['new']}: {d['changed']:,} of {d['rows']:,} rows change ({_pct(share, 2)})",
        markup=False,
    )
    if d["only_old"] or d["only_new"]:
        con.print(
            f"({d['only_old']:,} rows only in old, {d['only_new']:,} only in new: not compared)", markup=False
        )
    t = Table(title="routes")
    for col in ("route", "rows before", "rows after", "accuracy before [95% CI]", "accuracy after [95% CI]"):
        t.add_column(col, justify="left" if col == "route" else "right")
    for r in d["routes"]:
        t.add_row(
            r["route"],
            f"{r['rows_before']:,} ({_pct(r['share_before'])})",
            f"{r['rows_after']:,} ({_pct(r['share_after'])})",
            _pct(r["accuracy_before"], 2) + _ci(r["ci95_before"]),
            _pct(r["accuracy_after"], 2) + _ci(r["ci95_after"]),
        )
    con.print(t)
    if d["transitions"]:
        tt = Table(title="changes")
        for col in ("from", "to", "rows", "gold right before", "gold right after"):
            tt.add_column(col, justify="left" if col in ("from", "to") else "right")
        for x in d["transitions"]:
            tt.add_row(
                f"{x['old_route']} {x['old_label'] or ''}".strip(),
                f"{x['new_route']} {x['new_label'] or ''}".strip(),
                f"{x['rows']:,}",
                f"{x['old_correct']:,} of {x['gold']:,}",
                f"{x['new_correct']:,} of {x['gold']:,}",
            )
        con.print(tt)
    for r in d["rules_removed"]:
        con.print(f"- {r}", style="red", markup=False)
    for r in d["rules_added"]:
        con.print(f"+ {r}", style="green", markup=False)
    if d["examples"]:
        et = Table(title="examples")
        for col in ("key", "path", "before", "after", "gold"):
            et.add_column(col)
        for e in d["examples"]:
            et.add_row(e["key"], e["path"] or "-", e["old"], e["new"], e["gold"] or "-")
        con.print(et)


@main.command("test")
@click.argument("policy", type=click.Path(path_type=Path))
@db_option
@json_option
def test_cmd(policy: Path, db: Path, as_json: bool) -> None:
    """Check POLICY's expectations (in the file, or in NAME.expect.lql beside it); exit 1 if one fails.

    e.g. `expect coverage(done) >= 0.85`, `expect accuracy(done) >= 0.99`,
    `expect "cat_vs_dog_12" -> cat done`.
    """
    from rich.markup import escape

    from labelql.checker import check_with_expectations
    from labelql.engine import run_policy
    from labelql.expect import evaluate

    checked, expectations, where = check_with_expectations(policy)
    if not expectations:
        raise LabelQLError(
            f"{policy} has no expectations",
            hint=f"add lines like `expect coverage(done) >= 0.85` to it or to {where}",
        )
    with open_store(db) as store:
        result = run_policy(store, checked, keep=False)
        outcomes = evaluate(store, result, expectations)
    failed = [o for o in outcomes if not o["passed"]]
    if as_json:
        _print_json({"passed": not failed, "expectations": outcomes})
    else:
        from rich.table import Table

        t = Table(title=f"{policy}: {len(outcomes) - len(failed)} of {len(outcomes)} expectations hold")
        for col in ("", "expectation", "actual", "where"):
            t.add_column(col)
        for o in outcomes:
            t.add_row(
                "[green]ok[/green]" if o["passed"] else "[red]FAIL[/red]",
                escape(o["text"]),
                escape(o["actual"]),
                o["at"],
            )
        _console().print(t)
    if failed:
        sys.exit(1)


# -- repl ----------------------------------------------------------------------------------------
@main.command()
@click.argument("policy", required=False, type=click.Path(path_type=Path))
@click.option(
    "--script",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    help="Run the inputs of FILE (- for stdin) instead of prompting; exit 1 if any failed.",
)
@db_option
@functools.partial(json_option, help="One JSON object per answer, a line each (script mode).")
def repl(policy: Path | None, script: Path | None, db: Path, as_json: bool) -> None:
    """Try conditions and rules on the data live, then keep what works (:help inside).

    A condition prints the rows it matches, its coverage, the gold labels among them and the majority's
    accuracy with a 95% interval; a rule prints what adding it would change. The database is read into
    memory and not held: other commands can write to it meanwhile.
    """
    import sys

    from labelql.repl import run_interactive, run_script
    from labelql.session import Session

    con = _console()
    interactive = script is None and sys.stdin.isatty() and not as_json
    if interactive:
        con.print(f"loading {db} ...", highlight=False)
    with _progress_bar(as_json) as bar:  # shows only while embeddings or maps are computed
        session = Session(db, policy, progress=_step_progress(bar))
    if interactive:
        run_interactive(session, con)
        return
    text = sys.stdin.read() if script is None or str(script) == "-" else script.read_text(encoding="utf-8")
    sys.exit(run_script(session, text, con, as_json))


# -- demo ----------------------------------------------------------------------------------------
@main.command()
@click.option("--db", "db", default="demo.duckdb", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--policy",
    "policy",
    default=None,
    type=click.Path(path_type=Path),
    help="The policy to run (default: rules/cats_dogs.lql).",
)
@click.option("--rows", type=int, default=None, help="Simulate fewer rows than the guide's 18,699 (faster).")
def demo(db: Path, policy: Path | None, rows: int | None) -> None:
    """Build demo.duckdb from a SIMULATED cats-and-dogs data set and run the guide's policy on it."""
    from labelql.demo import run_demo

    run_demo(db, policy, _console(), rows)


if __name__ == "__main__":  # pragma: no cover
    main()
