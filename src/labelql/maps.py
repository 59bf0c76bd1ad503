"""2-D maps of a space (UMAP, t-SNE, PCA), cached in the store and extended by transform.

A map is keyed by (space, kind, parameters, model fingerprint). The first run fits it on every vector;
later runs place new rows into the existing map instead of recomputing it, so old rows keep their
coordinates. ``refit`` recomputes from scratch.

How new rows are placed: PCA by its own ``transform``. UMAP and t-SNE by their neighbours: a new row goes
to the weighted mean of the map positions of its 15 nearest fitted rows (exact search), weighted by UMAP's
fuzzy membership (``smooth_knn_dist``: the nearest neighbour weighs 1, the weights sum to log2(15)). That is
where UMAP's own ``transform`` starts before refining with a few epochs of gradient descent; the libraries'
transforms cost seconds of numba compilation per process (UMAP) and an index of the whole data set in a
pickle (1.1 GB for openTSNE at 100,000 rows), so ``labelql apply`` would cost what the data set costs. The
fitted rows' vectors are kept as a memory-mapped file (``ref-space<id>-<version>.f32``, shared by the maps of
one space and version). docs/workflow.md measures how much this placement differs from a fit on all rows.

numba compiles UMAP for ~30 s in a fresh process; its cache is kept in a persistent folder
(``NUMBA_CACHE_DIR``, default ``~/.cache/labelql/numba``) so later processes skip that.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelql.diagnostics import LabelQLError
from labelql.policy import ProjectionDef
from labelql.signals import Matrix, vectors_without
from labelql.store import SpaceInfo, Store, fetch_arrow

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


def _cache_numba_functions(packages: tuple[str, ...]) -> None:
    """Turn on numba's disk cache for every compiled function of ``packages`` that lacks it.

    umap-learn declares most of its numba functions without ``cache=True`` (the parallel ones, the layout
    optimiser), so a fresh process compiled them again for ~10 s even with a warm cache folder.
    ``Dispatcher.enable_caching`` is numba's own switch for that; functions already cached are left alone.
    """
    import sys

    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(packages):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and type(getattr(value, "_cache", None)).__name__ == "NullCache":
                try:
                    value.enable_caching()
                except Exception:  # a function numba cannot cache just compiles, as before
                    continue


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

        _cache_numba_functions(("umap", "pynndescent"))
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
    """Exact nearest neighbours by chunked matrix products: the k-nearest-neighbour graph UMAP is fitted
    on (up to 50,000 rows), and the neighbours that place new rows on a map. ``unit``: the rows are
    already L2-normalised (the store keeps them so), which spares a pass over them for cosine."""

    def __init__(self, data: np.ndarray[Any, Any], metric: str, unit: bool = False) -> None:
        self._raw_data = np.ascontiguousarray(data, dtype=np.float32)
        self.metric = metric
        self.unit = unit

    def query(self, x: np.ndarray[Any, Any], k: int, epsilon: float = 0.0) -> tuple[Any, Any]:
        """The ``k`` nearest rows of the index for each row of ``x``: (indices, distances), nearest first."""
        data = self._raw_data
        if self.metric == "cosine" and not self.unit:
            data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        sq = (data * data).sum(1) if self.metric != "cosine" else None
        k = min(k, len(data))
        out_i = np.empty((len(x), k), dtype=np.int32)
        out_d = np.empty((len(x), k), dtype=np.float32)
        for start in range(0, len(x), 1024):  # bounded memory: 1,024 query rows at a time
            q = np.asarray(x[start : start + 1024], dtype=np.float32)
            if self.metric == "cosine":
                q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
                score = q @ data.T  # similarity: the larger, the nearer
            else:
                assert sq is not None
                score = 2 * (q @ data.T) - sq[None, :]  # -(squared distance) + |q|^2: same order
            idx = top_k(score, k)
            best = np.take_along_axis(score, idx, axis=1)
            if self.metric == "cosine":
                dist = 1.0 - best
            else:
                dist = np.sqrt(np.maximum((q * q).sum(1)[:, None] - best, 0))
            out_i[start : start + len(q)] = idx
            out_d[start : start + len(q)] = dist
        return out_i, out_d


def top_k(score: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """The column indices of each row's ``k`` largest values, largest first; exact.

    ``np.argpartition`` over whole rows costs ~20 ns an element here. Instead: the k-th largest value of
    an evenly spaced sample of the columns is a lower bound for the row's k-th largest, so every true
    top-k value is >= it; comparing against it (~1 ns an element) leaves a few hundred candidates a row,
    which are then sorted.
    """
    b, n = score.shape
    stride = max(1, n // max(16 * k, n // 16))
    if stride == 1 or n < 4096:
        idx = np.argpartition(-score, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(score, idx, axis=1), axis=1, kind="stable")
        return np.asarray(np.take_along_axis(idx, order, axis=1))
    sample = score[:, ::stride]
    bound = -np.partition(-sample, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(score >= bound[:, None])
    values = score[rows, cols]
    order = np.lexsort((-values, rows))  # by row, then by value, largest first
    rows, cols = rows[order], cols[order]
    starts = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=b))[:-1]))
    return np.asarray(cols[starts[:, None] + np.arange(k)[None, :]])


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
    store: Store,
    proj: ProjectionDef,
    info: SpaceInfo,
    matrix: Matrix | Callable[[], Matrix],
    refit: bool = False,
) -> MapResult:
    """Coordinates for every vector of the space on this projection (see the module docstring).

    ``matrix`` may be a function: a fitted map places new rows from their own vectors, read by key,
    and never needs the whole matrix (so ``labelql apply`` costs what the new rows cost).
    """
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
        todo, vectors = vectors_without(
            store, info, "SELECT 1 FROM map_coords c WHERE c.map_id = ? AND c.key = v.key", [map_id]
        )
        if todo:
            name = Path(model_path).name
            if proj.kind in NEIGHBOUR_PLACED and not name.endswith(".pkl"):
                coords = place_by_neighbours(store, map_id, name, params["metric"], vectors)
            else:  # PCA, or a UMAP / t-SNE map fitted by an earlier LabelQL that pickled the model
                with open(store.cache_dir() / name, "rb") as f:
                    model = pickle.load(f)  # our own file, written below
                coords = _transform(proj.kind, model, vectors)
            _insert(store, map_id, todo, coords, "transform")
        return MapResult(map_id, proj.name, 0, len(todo), not todo, time.perf_counter() - t0)
    if callable(matrix):
        matrix = matrix()
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
        if proj.kind in NEIGHBOUR_PLACED:
            saved = save_reference(store, info, matrix)
        else:
            saved = f"map{map_id}-{proj.kind}.pkl"
            with open(store.cache_dir() / saved, "wb") as f:
                pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        con.execute("UPDATE maps SET model_path = ? WHERE id = ?", [saved, map_id])
        _insert(store, map_id, [str(k) for k in matrix.keys.tolist()], coords, "fit")
    return MapResult(map_id, proj.name, len(coords), 0, False, time.perf_counter() - t0)


NEIGHBOUR_PLACED = ("umap", "tsne")
NEIGHBOURS = 15


def save_reference(store: Store, info: SpaceInfo, matrix: Matrix) -> str:
    """Keep the vectors a map was fitted on (a hard link to the space's matrix file when possible)."""
    tag = hashlib.sha256(matrix.version.encode()).hexdigest()[:16]
    name = f"ref-space{info.id}-{tag}"
    base, source = store.cache_dir() / name, store.cache_dir() / f"space{info.id}-{tag}"
    for suffix in (".f32", ".keys.npy"):
        target = Path(str(base) + suffix)
        if target.exists():
            continue
        try:
            os.link(str(source) + suffix, target)  # the matrix file of the same version: no copy
        except OSError:
            tmp = Path(str(target) + ".tmp")
            if suffix == ".f32":
                np.ascontiguousarray(matrix.vectors, dtype=np.float32).tofile(tmp)
            else:
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(matrix.keys).astype(str))
            tmp.replace(target)
    return name


def fuzzy_weights(dist: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """UMAP's fuzzy membership of each row's k neighbours (its ``smooth_knn_dist``, vectorised): the
    nearest weighs 1, and sigma is found by bisection so that each row's weights sum to log2(k)."""
    d = np.asarray(dist, dtype=np.float64)
    rho = d[:, :1]
    excess = np.maximum(d - rho, 0.0)
    target = np.log2(d.shape[1])
    lo, hi = np.zeros(len(d)), np.full(len(d), np.inf)
    sigma = np.ones(len(d))
    for _ in range(64):
        total = np.exp(-excess / sigma[:, None]).sum(1)
        big = total > target
        hi = np.where(big, sigma, hi)
        lo = np.where(big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    return np.asarray(np.exp(-excess / np.maximum(sigma, 1e-12)[:, None]))


_NEIGHBOURS_SEEN: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _neighbours(base: Path, n: int, metric: str, vectors: np.ndarray[Any, Any]) -> tuple[Any, Any]:
    """The new rows' nearest fitted rows; the maps of one space (UMAP and t-SNE) share one search."""
    digest = hashlib.sha1(np.ascontiguousarray(vectors).tobytes()).hexdigest()
    key = (str(base), metric, digest)
    if key not in _NEIGHBOURS_SEEN:
        ref = np.memmap(str(base) + ".f32", dtype=np.float32, mode="r", shape=(n, vectors.shape[1]))
        _NEIGHBOURS_SEEN.clear()  # one batch of new rows at a time: keep no more than that
        # The store keeps unit vectors (vectors.store_vectors), so cosine needs no normalising here.
        _NEIGHBOURS_SEEN[key] = ExactSearch(ref, metric, unit=True).query(vectors, min(NEIGHBOURS, n))
    return _NEIGHBOURS_SEEN[key]


def place_by_neighbours(
    store: Store, map_id: int, reference: str, metric: str, vectors: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """New rows' map positions: the fuzzy-weighted mean position of their nearest fitted rows."""
    base = store.cache_dir() / reference
    keys = np.load(str(base) + ".keys.npy", allow_pickle=False)
    fitted_keys, fitted_xy = map_coords(store, map_id, "fit")
    xy = fitted_xy.astype(np.float64)
    if not np.array_equal(np.asarray(fitted_keys, dtype=str), keys):
        where = dict(zip(fitted_keys, xy, strict=True))
        xy = np.asarray([where[k] for k in keys.tolist()], dtype=np.float64)
    idx, dist = _neighbours(base, len(keys), metric, vectors)
    w = fuzzy_weights(dist)
    return np.asarray((w[..., None] * xy[idx]).sum(1) / w.sum(1, keepdims=True), dtype=np.float32)


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


def map_coords(
    store: Store, map_id: int, placed_by: str | None = None
) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Keys and (x, y) of a map, in key order (with ``placed_by``, only the rows placed that way)."""
    only = " AND placed_by = ?" if placed_by else ""
    arrow = fetch_arrow(
        store.con,
        f"SELECT key, x, y FROM map_coords WHERE map_id = ?{only} ORDER BY key",
        [map_id, placed_by] if placed_by else [map_id],
    )
    xy = np.column_stack([arrow.column(c).to_numpy(zero_copy_only=False) for c in ("x", "y")])
    return arrow.column("key").to_pylist(), np.asarray(xy, dtype=np.float32).reshape(arrow.num_rows, 2)
