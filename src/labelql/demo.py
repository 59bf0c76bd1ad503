"""``labelql demo``: build a demo database from scratch and show it.

The engine is not built yet, so the demo's "main job" is the foundation's: ingest a labelled image
folder (the shared cats-and-dogs sample when it is there, else a small generated set), check the
example policy, and print ``labelql info``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

from labelql.diagnostics import LabelQLError

if TYPE_CHECKING:
    from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CANDIDATES = (
    Path("../shared/data/catsdogs-sample"),
    REPO_ROOT.parent / "shared" / "data" / "catsdogs-sample",
)


def find_sample() -> Path | None:
    env = os.environ.get("LABELQL_SAMPLE")
    for cand in ([Path(env)] if env else []) + list(SAMPLE_CANDIDATES):
        if cand.is_dir():
            return cand
    return None


def generate_images(root: Path, per_class: int = 60, seed: int = 0) -> Path:
    """A small ImageFolder of generated pictures (warm 'cat' and cool 'dog' blobs)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for label, base in (("cat", (200, 120, 60)), ("dog", (60, 110, 200))):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = rng.randint(48, 160), rng.randint(48, 160)
            im = Image.new("RGB", (w, h), tuple(min(255, c + rng.randint(-40, 40)) for c in base))
            d = ImageDraw.Draw(im)
            for _ in range(3):
                x, y = rng.randint(0, w - 1), rng.randint(0, h - 1)
                d.ellipse((x, y, x + w // 3, y + h // 3), fill=tuple(rng.randint(0, 255) for _ in range(3)))
            im.save(folder / f"{label}.{i}.jpg", quality=85)
    return root


def run_demo(db: Path, data_dir: Path | None, console: Console) -> None:
    from labelql.checker import check_file
    from labelql.cli import _print_ingest, print_info
    from labelql.ingest import IngestOptions, ingest, media_dir_for
    from labelql.store import Store

    if db.exists():
        db.unlink()
    wal = db.with_name(db.name + ".wal")
    if wal.exists():
        wal.unlink()
    source = data_dir or find_sample()
    if source is None:
        source = generate_images(media_dir_for(db) / "generated")
        console.print(
            f"The cats-and-dogs sample was not found; using {source} (generated images).", markup=False
        )
    elif not source.is_dir():
        raise LabelQLError(f"no such folder: {source}")
    console.print(f"[bold]LabelQL demo[/bold]: ingesting {source} into {db}")
    with Store.create(db) as store:
        report = ingest(store, str(source), IngestOptions(labels_from_dirs=True))
        _print_ingest(report)
        data = store.info()
    policy_path = REPO_ROOT / "rules" / "cats_dogs.lql"
    if policy_path.exists():
        policy = check_file(policy_path)
        console.print(
            f"policy {policy_path.name}: checks clean ({len(policy.rules)} rules, "
            f"{len(policy.lets)} lets, {len(policy.warnings)} warnings)",
            markup=False,
        )
    print_info(data)
    console.print(
        "Next: the engine (labelql run) routes rows to done / review / manual; it is not built yet.",
        markup=False,
    )
