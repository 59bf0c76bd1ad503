"""Named density clusters on a 2-D map.

HDBSCAN finds clusters; points between clusters stay noise (the guide left them out on purpose). We use
the ``hdbscan`` package: on 100,000 2-D points it ran in 1.6-2.6 s where scikit-learn's HDBSCAN took 39 s
(``benchmarks/signals.py`` measures it again), and it can place new points into existing clusters
(``approximate_predict``), so rows added later get a cluster without re-clustering the old ones.

Names, in this order:

1. by anchors (``dogs = anchors(dog_examples)``): a cluster is named after the anchor set with the most
   anchors in it (at least one);
2. by prompt (``cats = text("photo of a cat")``): each prompt's scores are centred on their mean over
   the whole data set (prompts differ in their typical level); a cluster is named after the prompt whose
   centred mean over its members is highest, when that beats the second best (or 0 with one prompt) by
   the margin (parameter ``margin``, default 0.01); otherwise the cluster stays unnamed.

One name may cover several clusters (two sub-clusters of cats are both ``cats``).
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelql import policy as P
from labelql.maps import map_coords
from labelql.signals import ScoreContext
from labelql.store import Store

DEFAULT_MARGIN = 0.01
DEFAULT_MIN_SAMPLES = 10


def default_min_size(n: int) -> int:
    """1% of the rows, at least 10: small enough for sub-clusters, large enough to ignore specks."""
    return max(10, round(0.01 * n))


@dataclass
class ClusterInfo:
    cluster: int
    size: int
    name: str | None
    how: str
    evidence: dict[str, float]


@dataclass
class ClusterResult:
    run_id: int
    projection: str
    clusters: list[ClusterInfo]
    noise: int
    predicted: int
    cache_hit: bool
    seconds: float


def _fit(
    xy: np.ndarray[Any, Any], min_size: int, min_samples: int | None
) -> tuple[Any, np.ndarray[Any, Any]]:
    import hdbscan

    model = hdbscan.HDBSCAN(
        min_cluster_size=min_size, min_samples=min_samples, prediction_data=True, core_dist_n_jobs=1
    )
    labels = model.fit_predict(np.asarray(xy, dtype=np.float64))
    return model, np.asarray(labels, dtype=np.int64)


def name_clusters(
    labels: np.ndarray[Any, Any],
    keys: list[str],
    cset: P.ClusterSetDef,
    anchor_keys: dict[str, tuple[str, ...]],
    prompt_scores: dict[str, np.ndarray[Any, Any]],
) -> list[ClusterInfo]:
    """Name each cluster (see the module docstring). ``prompt_scores[name]`` is aligned with ``keys``."""
    params = dict(cset.params)
    margin = float(params.get("margin", DEFAULT_MARGIN))
    key_pos = {k: i for i, k in enumerate(keys)}
    out = []
    by_anchor = [c for c in cset.clusters if c.by == "anchors"]
    by_text = [c for c in cset.clusters if c.by == "text"]
    centred = {c.name: prompt_scores[c.name] - float(np.mean(prompt_scores[c.name])) for c in by_text}
    for cl in sorted(set(labels.tolist()) - {-1}):
        members = labels == cl
        size = int(members.sum())
        counts = {}
        for c in by_anchor:
            pos = [key_pos[k] for k in anchor_keys[c.name] if k in key_pos]
            counts[c.name] = int(sum(1 for p in pos if labels[p] == cl))
        best_anchor = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
        tied = sum(1 for v in counts.values() if v == best_anchor[1])
        if best_anchor[0] is not None and best_anchor[1] > 0 and tied == 1:
            out.append(
                ClusterInfo(cl, size, best_anchor[0], "anchors", {k: float(v) for k, v in counts.items()})
            )
            continue
        means = {name: float(np.mean(v[members])) for name, v in centred.items()}
        ranked = sorted(means.items(), key=lambda kv: kv[1], reverse=True)
        if ranked:
            second = ranked[1][1] if len(ranked) > 1 else 0.0
            if ranked[0][1] - second >= margin:
                out.append(ClusterInfo(cl, size, ranked[0][0], "prompt", means))
                continue
        out.append(
            ClusterInfo(cl, size, None, "unnamed", {**means, **{k: float(v) for k, v in counts.items()}})
        )
    return out


def ensure_clusters(
    ctx: ScoreContext,
    cset: P.ClusterSetDef,
    map_id: int,
    anchor_keys: dict[str, tuple[str, ...]],
    refit: bool = False,
) -> ClusterResult:
    """Cluster a map and name the clusters, or reuse the stored result and place new rows into it."""
    t0 = time.perf_counter()
    store = ctx.store
    con = store.con
    spec = json.dumps(
        {
            "params": dict(cset.params),
            "names": [
                {
                    "name": c.name,
                    "by": c.by,
                    "prompt": c.prompt,
                    "anchors": c.anchors,
                    "keys": list(anchor_keys.get(c.name, ())),
                }
                for c in cset.clusters
            ],
        },
        sort_keys=True,
    )
    found = con.execute(
        "SELECT id, model_path, summary FROM cluster_runs WHERE map_id = ? AND spec = ?::JSON "
        "ORDER BY id DESC LIMIT 1",
        [map_id, spec],
    ).fetchall()
    if found and not refit:
        run_id, model_path, summary = found[0]
        # Only the map's rows without a cluster yet (new rows placed by transform) are read.
        rows = con.execute(
            "SELECT key, x, y FROM map_coords m WHERE map_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM cluster_assign a WHERE a.run_id = ? AND a.key = m.key) ORDER BY key",
            [map_id, run_id],
        ).fetchall()
        todo = [r[0] for r in rows]
        infos = [ClusterInfo(**c) for c in json.loads(summary)["clusters"]]
        if todo:
            import hdbscan

            xy_new = np.asarray([(r[1], r[2]) for r in rows], dtype=np.float64)
            with open(store.cache_dir() / Path(model_path).name, "rb") as f:
                model = pickle.load(f)  # our own file, written below
            labels, _ = hdbscan.approximate_predict(model, xy_new)
            names = {c.cluster: c.name for c in infos}
            _assign(store, run_id, todo, np.asarray(labels), names)
        noise = con.execute(
            "SELECT count(*) FROM cluster_assign WHERE run_id = ? AND cluster = -1", [run_id]
        ).fetchall()[0][0]
        return ClusterResult(
            run_id, cset.projection, infos, int(noise), len(todo), not todo, time.perf_counter() - t0
        )
    keys, xy = map_coords(store, map_id)
    params = dict(cset.params)
    min_size = int(params.get("min_size", default_min_size(len(keys))))
    # HDBSCAN's own default (min_samples = min_size) costs O(n * min_size): 35 s on 100,000 points.
    min_samples = int(params.get("min_samples", DEFAULT_MIN_SAMPLES))
    model, labels = _fit(xy, min_size, min(min_samples, min_size))
    prompt_scores = {}
    for c in cset.clusters:
        if c.by == "text" and c.prompt is not None:
            sid = ctx.sid(P.TextScore(c.space, c.prompt))
            got = dict(con.execute("SELECT key, value FROM scores WHERE signal = ?", [sid]).fetchall())
            prompt_scores[c.name] = np.asarray([got.get(k, np.nan) for k in keys], dtype=np.float64)
            prompt_scores[c.name] = np.nan_to_num(
                prompt_scores[c.name], nan=float(np.nanmean(prompt_scores[c.name]))
            )
    infos = name_clusters(labels, keys, cset, anchor_keys, prompt_scores)
    summary = json.dumps({"min_size": min_size, "clusters": [c.__dict__ for c in infos]})
    with store.transaction():
        run_id = con.execute(
            "INSERT INTO cluster_runs (map_id, spec, summary, created_at) "
            "VALUES (?, ?::JSON, ?::JSON, now()) "
            "RETURNING id",
            [map_id, spec, summary],
        ).fetchall()[0][0]
        path = store.cache_dir() / f"clusters{run_id}.pkl"
        with open(path, "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        con.execute("UPDATE cluster_runs SET model_path = ? WHERE id = ?", [path.name, run_id])
        _assign(store, run_id, keys, labels, {c.cluster: c.name for c in infos})
    return ClusterResult(
        run_id, cset.projection, infos, int((labels == -1).sum()), 0, False, time.perf_counter() - t0
    )


def _assign(
    store: Store, run_id: int, keys: list[str], labels: np.ndarray[Any, Any], names: dict[int, str | None]
) -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "key": keys,
            "cluster": labels.astype(np.int32),
            "name": [names.get(int(c)) if c >= 0 else None for c in labels.tolist()],
        }
    )
    store.con.register("_assign_in", table)
    try:
        store.con.execute("INSERT INTO cluster_assign SELECT ?, key, cluster, name FROM _assign_in", [run_id])
    finally:
        store.con.unregister("_assign_in")


def gold_purity(store: Store, run_id: int) -> dict[int, tuple[str, float, int]]:
    """Per cluster: the majority gold label, its share, and how many members have gold."""
    rows = store.con.execute(
        "SELECT a.cluster, g.label, count(*) FROM cluster_assign a JOIN gold g ON a.key = g.key "
        "WHERE a.run_id = ? GROUP BY a.cluster, g.label",
        [run_id],
    ).fetchall()
    per: dict[int, dict[str, int]] = {}
    for cl, label, n in rows:
        per.setdefault(int(cl), {})[label] = int(n)
    out = {}
    for cl, counts in per.items():
        label, n = max(counts.items(), key=lambda kv: kv[1])
        total = sum(counts.values())
        out[cl] = (label, n / total, total)
    return out
