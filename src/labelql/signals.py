"""Scores: ``text``, ``similar`` and ``near`` for every row, computed once and cached in the store.

A space's vectors are read from DuckDB (the source of truth) once per data version into a
memory-mapped float32 matrix beside the database; a score is then one matrix-vector product in numpy
(about the memory-bandwidth bound, see ``benchmarks/signals.py``) and is stored in ``scores`` with the
data version it was computed for. A later run with the same data is a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelql import policy as P
from labelql.diagnostics import LabelQLError
from labelql.store import SpaceInfo, Store, fetch_arrow


# -- the matrix ----------------------------------------------------------------------------------
@dataclass
class Matrix:
    """A space's unit vectors as a (rows x dim) float32 matrix, with keys in the same order."""

    keys: np.ndarray[Any, Any]
    vectors: np.ndarray[Any, Any]
    version: str
    _index: dict[str, int] | None = None

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {str(k): i for i, k in enumerate(self.keys.tolist())}
        return self._index

    def rows_of(self, keys: Iterable[str]) -> tuple[np.ndarray[Any, Any], list[str]]:
        """Row numbers of ``keys``, and the keys that have no vector."""
        idx = self.index()
        found, missing = [], []
        for k in keys:
            if k in idx:
                found.append(idx[k])
            else:
                missing.append(k)
        return np.asarray(found, dtype=np.int64), missing


def load_matrix(store: Store, info: SpaceInfo) -> Matrix:
    """The memory-mapped matrix for the space's current data version (built once per version)."""
    version = store.data_version(info)
    tag = hashlib.sha256(version.encode()).hexdigest()[:16]
    base = store.cache_dir() / f"space{info.id}-{tag}"
    mat_path, keys_path = base.with_suffix(".f32"), base.with_suffix(".keys.npy")
    if not (mat_path.exists() and keys_path.exists()):
        arrow = fetch_arrow(store.con, f"SELECT key, vec FROM {info.table} ORDER BY key")
        keys = np.asarray(arrow.column("key").to_pylist(), dtype=object)
        flat = arrow.column("vec").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        mat = np.ascontiguousarray(flat, dtype=np.float32).reshape(len(keys), info.dim)
        tmp = mat_path.with_suffix(".tmp")
        mat.tofile(tmp)
        np.save(keys_path.with_suffix(".tmp.npy"), keys.astype(str))
        tmp.replace(mat_path)
        keys_path.with_suffix(".tmp.npy").replace(keys_path)
        for old in store.cache_dir().glob(f"space{info.id}-*"):  # earlier versions of this space
            if not old.name.startswith(base.name):
                old.unlink(missing_ok=True)
    keys = np.load(keys_path, allow_pickle=False)
    n = len(keys)
    vectors = (
        np.memmap(mat_path, dtype=np.float32, mode="r", shape=(n, info.dim))
        if n
        else np.zeros((0, info.dim), dtype=np.float32)
    )
    return Matrix(keys, vectors, version)


# -- signal ids ----------------------------------------------------------------------------------
Signal = P.TextScore | P.SimilarScore | P.NearCount


def signal_id(s: Signal, space: str | None = None) -> str:
    """A stable id for a signal; the engine reads ``scores`` by it.

    ``space`` is the store's name of the space when it differs from the policy's (a policy may call
    the stored space "blobs" ``e``: ``embedding e = precomputed("blobs")``); scores are shared by all
    policies that use the same stored space.
    """
    name = space or s.space
    if isinstance(s, P.TextScore):
        return "text|" + json.dumps([name, s.prompt], ensure_ascii=False)
    if isinstance(s, P.SimilarScore):
        return "similar|" + json.dumps([name, list(s.keys)], ensure_ascii=False)
    return "near|" + json.dumps([name, list(s.keys), s.threshold], ensure_ascii=False)


def store_space_name(policy: P.CheckedPolicy, name: str) -> str:
    """The name under which the store keeps a policy's space."""
    space = policy.space(name)
    return str(space.param("space")) if space.provider == "precomputed" else name


def policy_signals(policy: P.CheckedPolicy) -> list[Signal]:
    """Every score a policy uses (in rules, lets, slices and cluster names), each once, in order.

    Spaces are the policy's names; :func:`signal_id` with :func:`store_space_name` gives the stored id.
    """
    seen: dict[str, Signal] = {}
    for e in policy.expressions():
        for node in P.walk(e):
            if isinstance(node, P.TextScore | P.SimilarScore | P.NearCount):
                seen.setdefault(signal_id(node), node)
    for cs in policy.cluster_sets:
        for c in cs.clusters:
            if c.by == "text" and c.prompt is not None:
                node = P.TextScore(c.space, c.prompt)
                seen.setdefault(signal_id(node), node)
    return list(seen.values())


# -- computing -----------------------------------------------------------------------------------
@dataclass
class SignalReport:
    id: str
    rows: int
    cached: bool
    seconds: float


@dataclass
class ScoreContext:
    """What computing scores needs: the store, the spaces, and encoders loaded only on demand."""

    store: Store
    spaces: dict[str, SpaceInfo]
    encoder_for: Callable[[str], Any]
    matrices: dict[str, Matrix] = field(default_factory=dict)

    def sid(self, s: Signal) -> str:
        return signal_id(s, self.spaces[s.space].name)

    def matrix(self, space: str) -> Matrix:
        if space not in self.matrices:
            self.matrices[space] = load_matrix(self.store, self.spaces[space])
        return self.matrices[space]


def prompt_vector(ctx: ScoreContext, space: str, prompt: str) -> np.ndarray[Any, Any]:
    """The prompt's unit vector in ``space``: encoded once per (space, model, prompt) and cached."""
    info = ctx.spaces[space]
    rows = ctx.store.con.execute(
        "SELECT vec FROM prompt_vectors WHERE space = ? AND fingerprint = ? AND prompt = ?",
        [space, info.fingerprint, prompt],
    ).fetchall()
    if rows:
        return np.asarray(rows[0][0], dtype=np.float32)
    encoder = ctx.encoder_for(space)
    v = np.asarray(encoder.encode_texts([prompt])[0], dtype=np.float64)
    unit = (v / np.linalg.norm(v)).astype(np.float32)
    ctx.store.con.execute(
        "INSERT INTO prompt_vectors VALUES (?, ?, ?, ?)", [space, info.fingerprint, prompt, unit.tolist()]
    )
    return unit


def anchor_matrix(ctx: ScoreContext, space: str, keys: tuple[str, ...], what: str) -> np.ndarray[Any, Any]:
    """The anchors' vectors, read by key (a handful of rows: no need for the whole matrix)."""
    info = ctx.spaces[space]
    rows = dict(
        ctx.store.con.execute(
            f"SELECT key, vec FROM {info.table} WHERE list_contains(?::VARCHAR[], key)", [list(keys)]
        ).fetchall()
    )
    missing = [k for k in keys if k not in rows]
    if missing:
        raise LabelQLError(
            f"{what}: {len(missing)} anchor keys have no vector in space '{space}': "
            f"{', '.join(missing[:10])}",
            hint="check the keys (labelql info), or embed those rows first",
        )
    return np.asarray([rows[k] for k in keys], dtype=np.float32)


def compute_values(
    ctx: ScoreContext, s: Signal, vectors: np.ndarray[Any, Any] | None = None
) -> np.ndarray[Any, Any]:
    """One score per row of ``vectors`` (default: the space's whole matrix, in its key order)."""
    m = ctx.matrix(s.space).vectors if vectors is None else vectors
    if isinstance(s, P.TextScore):
        return np.asarray(m @ prompt_vector(ctx, s.space, s.prompt))
    what = f"similar({s.anchors or s.keys[0]})" if isinstance(s, P.SimilarScore) else f"near({s.anchors})"
    anchors = anchor_matrix(ctx, s.space, s.keys, what)
    sims = np.asarray(m @ anchors.T)
    if isinstance(s, P.SimilarScore):
        return np.asarray(sims.max(axis=1))
    return np.asarray((sims >= np.float32(s.threshold)).sum(axis=1), dtype=np.float32)


def ensure_scores(ctx: ScoreContext, signals: list[Signal], force: bool = False) -> list[SignalReport]:
    """Compute and store each signal unless the store already holds it for the current data."""
    import pyarrow as pa

    out = []
    con = ctx.store.con
    for s in signals:
        t = time.perf_counter()
        sid = ctx.sid(s)
        version = ctx.store.data_version(ctx.spaces[s.space])
        hit = con.execute("SELECT data_version FROM signals WHERE id = ?", [sid]).fetchall()
        if hit and hit[0][0] == version and not force:
            out.append(SignalReport(sid, -1, True, time.perf_counter() - t))
            continue
        info = ctx.spaces[s.space]
        extend = bool(hit) and not force and hit[0][0].startswith(ctx.store.version_base(info))
        if extend:
            # Rows were only added since the scores were computed: score just the rows without one,
            # so the cost follows the new data (labelql apply), not the data set.
            keys, vecs = vectors_without(
                ctx.store, info, "SELECT 1 FROM scores s WHERE s.signal = ? AND s.key = v.key", [sid]
            )
            values = compute_values(ctx, s, vecs).astype(np.float32) if keys else np.zeros(0, np.float32)
        else:
            m = ctx.matrix(s.space)
            keys = m.keys.tolist()
            values = compute_values(ctx, s).astype(np.float32)
        table = pa.table({"key": pa.array(keys, pa.string()), "value": pa.array(values)})
        with ctx.store.transaction():
            if not extend:
                con.execute("DELETE FROM scores WHERE signal = ?", [sid])
            con.register("_scores_in", table)
            try:
                con.execute("INSERT INTO scores SELECT ?, key, value FROM _scores_in", [sid])
            finally:
                con.unregister("_scores_in")
            kind = sid.split("|", 1)[0]
            args = json.loads(sid.split("|", 1)[1])
            con.execute(
                "INSERT INTO signals VALUES (?, ?, ?, ?, ?, now()) ON CONFLICT (id) DO UPDATE SET "
                "data_version = excluded.data_version, computed_at = excluded.computed_at",
                [sid, kind, ctx.spaces[s.space].name, json.dumps(args), version],
            )
        out.append(SignalReport(sid, len(values), False, time.perf_counter() - t))
    return out


def vectors_without(
    store: Store, info: SpaceInfo, correlated: str, params: list[Any]
) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Keys (in key order) and vectors of the space's rows for which ``correlated``, a subquery on
    ``v.key``, finds nothing: the rows a cache lacks, read without loading the whole matrix."""
    arrow = fetch_arrow(
        store.con,
        f"SELECT v.key, v.vec FROM {info.table} v WHERE NOT EXISTS ({correlated}) ORDER BY v.key",
        params,
    )
    keys = arrow.column("key").to_pylist()
    flat = arrow.column("vec").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return keys, np.asarray(flat, dtype=np.float32).reshape(len(keys), info.dim)


def scores_for(store: Store, s: Signal) -> dict[str, float]:
    """Stored scores of one signal, by key (for reports and tests; the engine joins in SQL)."""
    return {
        k: float(v)
        for k, v in store.con.execute(
            "SELECT key, value FROM scores WHERE signal = ?", [signal_id(s)]
        ).fetchall()
    }
