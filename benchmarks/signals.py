"""Signals speed, side by side in one run (see issue "Signals" for the goals):

(a) images/s of the embedding pipeline on real JPEGs vs a bare model forward on pre-decoded tensors
    (ViT-B-32, random weights: speed does not depend on the weights), fp32 and bf16 (+ cosine to fp32);
(b) scoring 1,000,000 x 512 vectors against one prompt vs the memory-bandwidth bound measured here,
    with DuckDB's array_cosine_similarity for comparison;
(c) UMAP and t-SNE on 18,699 x 512, UMAP cold (empty numba cache) and warm, each in a fresh process;
(d) a cache hit of `prepare`, and HDBSCAN on 100,000 2-D points (hdbscan package vs scikit-learn).

    python benchmarks/signals.py [--images 256] [--rows 1000000] [--skip a,b,c,d] [--sklearn]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import best  # benchmarks/ is on sys.path when a script runs
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "catsdogs-sample"
console = Console(width=140)


def part_a(n_images: int, tmp: Path) -> list[tuple[str, ...]]:
    import torch
    from PIL import Image

    from labelql.checker import check_text
    from labelql.embed import bf16_speedup, embed_rows, load_encoder
    from labelql.ingest import ingest
    from labelql.store import Store

    files = sorted(SAMPLE.rglob("*.jpg"))[:n_images]
    folder = tmp / "imgs"
    folder.mkdir()
    for f in files:
        os.symlink(f, folder / f.name)
    rows = []
    ref = None
    for precision in ("fp32", "bf16"):
        policy = check_text(
            f'labels a\nembedding clip = open_clip("ViT-B-32", random_weights=true, '
            f'precision="{precision}")\n',
            "b.lql",
        )
        enc = load_encoder(policy.space("clip"), "cpu", precision)
        if enc.precision != precision:
            rows.append((f"(a) {precision}", "skipped", "; ".join(enc.notices), "", "", ""))
            continue
        tensors = []
        for f in files:
            with Image.open(f) as im:
                tensors.append(enc.transform(im.convert("RGB")))  # type: ignore[misc]
        x = torch.stack(tensors)
        assert enc.encode_image_batch is not None
        enc.encode_image_batch(x[:8])  # warm-up
        t = time.perf_counter()
        bare_vecs = np.concatenate([enc.encode_image_batch(x[i : i + 32]) for i in range(0, len(x), 32)])
        bare = len(x) / (time.perf_counter() - t)
        with Store.create(tmp / f"{precision}.duckdb") as store:
            ingest(store, str(folder))
            t = time.perf_counter()
            report = embed_rows(store, enc, batch_size=32)
            pipe = report.embedded / (time.perf_counter() - t)
        unit = bare_vecs / np.linalg.norm(bare_vecs, axis=1, keepdims=True)
        extra = ""
        if precision == "fp32":
            ref = unit
            fp32_rate = pipe
        else:
            cos = (unit * ref).sum(axis=1)  # type: ignore[operator]
            extra = (
                f"cosine to fp32: min {cos.min():.4f}, mean {cos.mean():.4f}; {pipe / fp32_rate:.2f}x fp32"
            )
        rows.append(
            (
                f"(a) embed {len(files)} real JPEGs, ViT-B-32 {precision}, {torch.get_num_threads()} threads",
                f"{pipe:.1f} img/s",
                f"bare forward {bare:.1f} img/s",
                f"{pipe / bare:.0%} of bare",
                ">= 90% of bare" + ("; bf16 >= 4x fp32" if precision == "bf16" else ""),
                extra,
            )
        )
    rows.append(("(a) bf16 matmul speed-up measured on this CPU", f"{bf16_speedup():.2f}x", "", "", "", ""))
    return rows


def float16_time(m: np.ndarray, q: np.ndarray) -> float:
    f16, q16 = m.astype(np.float16), q.astype(np.float16)
    return best(lambda: f16 @ q16, repeat=1)


def part_b(n_rows: int) -> list[tuple[str, ...]]:
    import duckdb

    rng = np.random.default_rng(0)
    m = rng.standard_normal((n_rows, 512), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = m[123].copy()
    gb = m.nbytes / 1e9
    bound = best(lambda: np.add.reduce(m, axis=0))  # one streaming read of the whole matrix
    ours = best(lambda: m @ q)
    half = float16_time(m, q)
    con = duckdb.connect()
    import pyarrow as pa

    con.register("v", pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), 512)}))
    con.execute("CREATE TABLE vecs AS SELECT vec::FLOAT[512] AS vec FROM v")
    qv = q.tolist()
    duck = best(
        lambda: con.execute(
            "SELECT array_cosine_similarity(vec, ?::FLOAT[512]) FROM vecs", [qv]
        ).fetchnumpy(),
        repeat=2,
    )
    scores = (m @ q).astype(np.float32)
    keys = pa.array([f"k{i}" for i in range(n_rows)])
    con.execute("CREATE TABLE scores (signal VARCHAR, key VARCHAR, value FLOAT)")
    con.register("s", pa.table({"key": keys, "value": scores}))
    store_t = best(
        lambda: (
            con.execute("DELETE FROM scores"),
            con.execute("INSERT INTO scores SELECT 'x', key, value FROM s"),
        ),
        repeat=2,
    )
    return [
        (
            f"(b) memory-bandwidth bound: read {gb:.2f} GB once",
            f"{bound:.3f} s",
            f"{gb / bound:.1f} GB/s",
            "1.00x",
            "",
            "",
        ),
        (
            f"(b) LabelQL: numpy float32 matrix @ prompt ({n_rows:,} x 512)",
            f"{ours:.3f} s",
            "",
            f"{ours / bound:.2f}x",
            "<= 1.5x bound",
            "",
        ),
        ("(b) numpy float16 (for comparison)", f"{half:.3f} s", "", f"{half / bound:.1f}x", "", ""),
        (
            "(b) DuckDB array_cosine_similarity (for comparison)",
            f"{duck:.3f} s",
            "",
            f"{duck / bound:.1f}x",
            "",
            "",
        ),
        (f"(b) storing {n_rows:,} scores in DuckDB (Arrow insert)", f"{store_t:.3f} s", "", "", "", ""),
    ]


MAP_SCRIPT = r"""
import json, sys, time, numpy as np
kind, path = sys.argv[1], sys.argv[2]
x = np.load(path)
from labelql.maps import DEFAULTS, _fit  # LabelQL's own fitting path (exact kNN for UMAP up to 50,000 rows)
t = time.perf_counter()
_fit(kind, dict(DEFAULTS[kind]), x)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def synthetic(n: int, d: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d)) * 0.6
    x = centres[rng.integers(0, 6, n)] + rng.standard_normal((n, d)) * 0.25
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def part_c(tmp: Path) -> list[tuple[str, ...]]:
    x = synthetic(18_699)
    path = tmp / "x.npy"
    np.save(path, x)
    rows = []
    cold_cache = tmp / "numba-cold"
    for label, kind, cache in (
        ("UMAP, cold (empty numba cache)", "umap", str(cold_cache)),
        ("UMAP, warm (numba cache from the cold run)", "umap", str(cold_cache)),
        ("t-SNE (openTSNE)", "tsne", None),
    ):
        env = {**os.environ}
        if cache:
            env["NUMBA_CACHE_DIR"] = cache
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", MAP_SCRIPT, kind, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        total = time.perf_counter() - t
        fit = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        rows.append(
            (f"(c) {label}, 18,699 x 512, fresh process", f"{total:.1f} s", f"fit {fit:.1f} s", "", "", "")
        )
    warm_umap = float(rows[1][1].split()[0])
    tsne = float(rows[2][1].split()[0])
    rows.append(("(c) both maps, numba cache warm", f"{warm_umap + tsne:.1f} s", "", "", "<= 40 s", ""))
    return rows


def part_d(tmp: Path, with_sklearn: bool) -> list[tuple[str, ...]]:
    rows = []
    rng = np.random.default_rng(0)
    centres = rng.uniform(-30, 30, size=(8, 2))
    xy = np.concatenate(
        [c + rng.standard_normal((12_000, 2)) for c in centres] + [rng.uniform(-35, 35, size=(4_000, 2))]
    )
    import hdbscan

    t = time.perf_counter()
    hdbscan.HDBSCAN(min_cluster_size=1000, min_samples=10, prediction_data=True, core_dist_n_jobs=1).fit(xy)
    ours = time.perf_counter() - t
    rows.append(
        (f"(d) HDBSCAN, {len(xy):,} 2-D points (hdbscan package, used)", f"{ours:.2f} s", "", "", "< 5 s", "")
    )
    if with_sklearn:
        from sklearn.cluster import HDBSCAN

        t = time.perf_counter()
        HDBSCAN(min_cluster_size=1000, min_samples=10, copy=True).fit(xy)
        rows.append(
            (
                "(d) scikit-learn HDBSCAN, same points (not used)",
                f"{time.perf_counter() - t:.2f} s",
                "",
                "",
                "",
                "",
            )
        )
    # cache hit: prepare twice on a precomputed 18,699-row space with maps and clusters
    from labelql.checker import check_text
    from labelql.prepare import prepare
    from labelql.store import Store
    from labelql.vectors import import_embeddings

    n = 18_699
    x = synthetic(n)
    keys = [f"cat_vs_dog_{i}" for i in range(n)]
    with Store.create(tmp / "hit.duckdb") as store:
        store.con.execute(
            "INSERT INTO rows (key, kind, text, added_at, source) "
            "SELECT 'cat_vs_dog_' || i, 'text', '', now(), 'b' FROM range(?) t(i)",
            [n],
        )
        np.savez(tmp / "v.npz", keys=np.array(keys), vectors=x)
        import_embeddings(store, tmp / "v.npz", space="clip", model_id="synthetic")
        policy = check_text(
            'labels cat, dog\nembedding clip = precomputed("clip")\n'
            "projection p = pca(clip)\n"
            'anchors a = "cat_vs_dog_1", "cat_vs_dog_2"\nanchors b = "cat_vs_dog_3"\n'
            "clusters p: cats = anchors(a), dogs = anchors(b)\n"
            "cat IF cluster(p) = cats AND near(a, 0.9) >= 1 -> done\n"
            "dog IF similar(b) > 0.5 -> review\n",
            "hit.lql",
        )
        first = prepare(store, policy)
        t = time.perf_counter()
        second = prepare(store, policy)
        hit = time.perf_counter() - t
        assert all(s.cached for s in second.signals)
    rows.append(
        (
            f"(d) prepare, first run ({n:,} rows: scores, PCA map, clusters)",
            f"{first.seconds:.2f} s",
            "",
            "",
            "",
            "",
        )
    )
    rows.append(("(d) prepare, cache hit (same data, same policy)", f"{hit:.3f} s", "", "", "< 0.5 s", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip", default="")
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn's HDBSCAN (about 40 s)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "a" not in skip:
            if SAMPLE.is_dir():
                rows += part_a(args.images, tmp)
            else:
                rows.append(("(a) skipped: no real photo sample", "", "", "", "", ""))
        if "b" not in skip:
            rows += part_b(args.rows)
        if "c" not in skip:
            rows += part_c(tmp)
        if "d" not in skip:
            rows += part_d(tmp, args.sklearn)
    table = Table(title=f"signals on {os.cpu_count()} cores")
    for col in ("measure", "result", "baseline", "ratio", "goal", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)


if __name__ == "__main__":
    main()
