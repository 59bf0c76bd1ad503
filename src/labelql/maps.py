"""2-D maps of a space (UMAP, t-SNE, PCA), cached in the store and extended by transform.

A map is keyed by (space, kind, parameters, model fingerprint). The first run fits it on every vector
and keeps the fitted model in a file beside the database; later runs place new rows into the existing map
with the library's own ``transform`` (UMAP's, openTSNE's, PCA's) instead of recomputing it, so old rows
keep their coordinates. ``refit`` recomputes from scratch.

numba compiles UMAP for ~30 s in a fresh process; its cache is kept in a persistent folder
(``NUMBA_CACHE_DIR``, default ``~/.cache/labelql/numba``) so later processes skip that.
"""

from __future__ import annotations

import json
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelql.diagnostics import LabelQLError
from labelql.policy import ProjectionDef
from labelql.signals import Matrix
from labelql.store import SpaceInfo, Store

DEFAULTS: dict[str, dict[str, Any]] = {
    "umap": {"neighbors": 15, "min_dist": 0.1, "seed": 0, "metric": "cosine"},
    "tsne": {"perplexity": 30.0, "seed": 0, "metric": "cosine", "exaggeration": None},
    "pca": {"seed": 0},
}


def numba_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "labelql" / "numba")


def _prepare_numba() -> None:
    os.environ.setdefault("NUMBA_CACHE_DIR", numba_cache_dir())
    Path(os.environ["NUMBA_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)


def full_params(proj: ProjectionDef) -> dict[str, Any]:
    return {**DEFAULTS[proj.kind], **dict(proj.params)}


@dataclass
class MapResult:
    map_id: int
    projection: str
    fitted: int
    transformed: int
    cache_hit: bool
    seconds: float


def _fit(kind: str, params: dict[str, Any], x: np.ndarray[Any, Any]) -> tuple[Any, np.ndarray[Any, Any]]:
    n = len(x)
    if kind == "umap":
        if n <= params["neighbors"]:
            raise LabelQLError(
                f"umap needs more rows than neighbors={params['neighbors']}; the space has {n}",
                hint="lower neighbors=, or embed more rows",
            )
        _prepare_numba()
        import umap

        model = umap.UMAP(
            n_neighbors=int(params["neighbors"]),
            min_dist=float(params["min_dist"]),
            metric=params["metric"],
            random_state=int(params["seed"]),
            transform_seed=int(params["seed"]),
            n_components=2,
            n_jobs=1,  # a seed means one thread anyway; saying so keeps umap from warning about it
            # Exact neighbours by matrix products up to 50,000 rows: faster here than pynndescent, whose
            # search code numba compiles anew in every process (~25 s), and exact.
            precomputed_knn=_exact_knn(x, int(params["neighbors"]), params["metric"]),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap warns that a precomputed graph disables its own index
            coords = model.fit_transform(x)
        # Our exact index replaces pynndescent's for transform (and pickles instantly; see ExactSearch).
        model._knn_search_index = ExactSearch(model._raw_data, params["metric"])
        return model, np.asarray(coords, dtype=np.float32)
    if kind == "tsne":
        if n <= 3 * params["perplexity"]:
            raise LabelQLError(
                f"tsne needs more than 3 x perplexity = {3 * params['perplexity']:g} rows; the space has {n}",
                hint="lower perplexity=, or embed more rows",
            )
        from openTSNE import TSNE

        kwargs: dict[str, Any] = {
            "perplexity": float(params["perplexity"]),
            "metric": params["metric"],
            "random_state": int(params["seed"]),
            "n_jobs": os.cpu_count() or 1,
            "verbose": False,
            # Exact neighbours (brute force) are faster than Annoy's index at this size, and exact.
            "neighbors": "exact" if n <= EXACT_KNN_MAX_ROWS else "auto",
        }
        if params.get("exaggeration"):
            kwargs["exaggeration"] = float(params["exaggeration"])
        embedding = TSNE(**kwargs).fit(np.asarray(x, dtype=np.float64))
        return embedding, np.asarray(embedding, dtype=np.float32)
    if kind == "pca":
        if n < 2:
            raise LabelQLError(f"pca needs at least 2 rows; the space has {n}")
        from sklearn.decomposition import PCA

        model = PCA(n_components=2, random_state=int(params["seed"]))
        return model, np.asarray(model.fit_transform(x), dtype=np.float32)
    raise LabelQLError(f"unknown projection kind {kind!r}")  # the checker never lets this through


class ExactSearch:
    """Exact nearest neighbours by chunked matrix products: stands in for UMAP's pynndescent index.

    Pickling a fitted UMAP makes pynndescent compile its search function first: 55 s for 18,699 rows,
    on every fit. LabelQL keeps this small exact index in its place, so saving the map is instant and
    ``UMAP.transform`` (the library's own) still places new rows, with exact rather than approximate
    neighbours.
    """

    def __init__(self, data: np.ndarray[Any, Any], metric: str) -> None:
        self._raw_data = np.ascontiguousarray(data, dtype=np.float32)
        self.metric = metric
        self._angular_trees = metric == "cosine"

    def query(self, x: np.ndarray[Any, Any], k: int, epsilon: float = 0.0) -> tuple[Any, Any]:
        """The ``k`` nearest rows of the index for each row of ``x``: (indices, distances), nearest first."""
        data = self._raw_data
        if self.metric == "cosine":
            data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        sq = (data * data).sum(1)
        k = min(k, len(data))
        out_i = np.empty((len(x), k), dtype=np.int32)
        out_d = np.empty((len(x), k), dtype=np.float32)
        for start in range(0, len(x), 2048):  # bounded memory: 2,048 query rows at a time
            q = np.asarray(x[start : start + 2048], dtype=np.float32)
            if self.metric == "cosine":
                q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
                dist = 1.0 - q @ data.T
            else:
                dist = np.sqrt(np.maximum((q * q).sum(1)[:, None] - 2 * q @ data.T + sq[None, :], 0))
            idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
            d = np.take_along_axis(dist, idx, axis=1)
            order = np.argsort(d, axis=1)
            out_i[start : start + len(q)] = np.take_along_axis(idx, order, axis=1)
            out_d[start : start + len(q)] = np.take_along_axis(d, order, axis=1)
        return out_i, out_d


EXACT_KNN_MAX_ROWS = 50_000


def _exact_knn(x: np.ndarray[Any, Any], k: int, metric: str) -> tuple[Any, Any, None]:
    if len(x) > EXACT_KNN_MAX_ROWS:
        return (None, None, None)  # umap builds its own approximate index
    idx, dist = ExactSearch(x, metric).query(x, k)
    return idx, dist, None


def _transform(kind: str, model: Any, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if kind == "umap":
        _prepare_numba()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(model.transform(x), dtype=np.float32)
    if kind == "tsne":
        return np.asarray(model.transform(np.asarray(x, dtype=np.float64)), dtype=np.float32)
    return np.asarray(model.transform(x), dtype=np.float32)


def ensure_map(
    store: Store, proj: ProjectionDef, info: SpaceInfo, matrix: Matrix, refit: bool = False
) -> MapResult:
    """Coordinates for every vector of the space on this projection (see the module docstring)."""
    t0 = time.perf_counter()
    params = full_params(proj)
    params_json = json.dumps(params, sort_keys=True)
    con = store.con
    found = con.execute(
        "SELECT id, model_path FROM maps "
        "WHERE space = ? AND kind = ? AND params = ?::JSON AND fingerprint = ? "
        "ORDER BY id DESC LIMIT 1",
        [info.name, proj.kind, params_json, info.fingerprint],
    ).fetchall()
    if found and not refit:
        map_id, model_path = found[0]
        have = {k for (k,) in con.execute("SELECT key FROM map_coords WHERE map_id = ?", [map_id]).fetchall()}
        todo = [i for i, k in enumerate(matrix.keys.tolist()) if k not in have]
        if todo:
            with open(model_path, "rb") as f:
                model = pickle.load(f)  # our own file, written below
            coords = _transform(proj.kind, model, np.asarray(matrix.vectors[todo]))
            _insert(store, map_id, [str(matrix.keys[i]) for i in todo], coords, "transform")
        return MapResult(map_id, proj.name, 0, len(todo), not todo, time.perf_counter() - t0)
    if len(matrix.keys) == 0:
        raise LabelQLError(
            f"space '{info.name}' has no vectors to map", hint="embed rows first (labelql prepare)"
        )
    model, coords = _fit(proj.kind, params, np.asarray(matrix.vectors))
    with store.transaction():
        if found:
            old = found[0][0]
            con.execute(
                "DELETE FROM cluster_assign WHERE run_id IN (SELECT id FROM cluster_runs WHERE map_id = ?)",
                [old],
            )
            con.execute("DELETE FROM cluster_runs WHERE map_id = ?", [old])
            con.execute("DELETE FROM map_coords WHERE map_id = ?", [old])
            con.execute("DELETE FROM maps WHERE id = ?", [old])
        map_id = con.execute(
            "INSERT INTO maps (space, kind, params, fingerprint, fitted_rows, created_at) "
            "VALUES (?, ?, ?::JSON, ?, ?, now()) RETURNING id",
            [info.name, proj.kind, params_json, info.fingerprint, len(coords)],
        ).fetchall()[0][0]
        model_path = store.cache_dir() / f"map{map_id}-{proj.kind}.pkl"
        with open(model_path, "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        con.execute("UPDATE maps SET model_path = ? WHERE id = ?", [str(model_path), map_id])
        _insert(store, map_id, [str(k) for k in matrix.keys.tolist()], coords, "fit")
    return MapResult(map_id, proj.name, len(coords), 0, False, time.perf_counter() - t0)


def _insert(store: Store, map_id: int, keys: list[str], coords: np.ndarray[Any, Any], placed_by: str) -> None:
    import pyarrow as pa

    table = pa.table(
        {"key": keys, "x": coords[:, 0].astype(np.float32), "y": coords[:, 1].astype(np.float32)}
    )
    store.con.register("_coords_in", table)
    try:
        store.con.execute(
            "INSERT INTO map_coords SELECT ?, key, x, y, ? FROM _coords_in", [map_id, placed_by]
        )
    finally:
        store.con.unregister("_coords_in")


def map_coords(store: Store, map_id: int) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Keys and (x, y) of a map, in key order."""
    rows = store.con.execute(
        "SELECT key, x, y FROM map_coords WHERE map_id = ? ORDER BY key", [map_id]
    ).fetchall()
    keys = [r[0] for r in rows]
    xy = np.asarray([(r[1], r[2]) for r in rows], dtype=np.float32).reshape(len(rows), 2)
    return keys, xy
