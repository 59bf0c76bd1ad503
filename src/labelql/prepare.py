"""``labelql prepare POLICY``: compute exactly the signals a checked policy needs, and nothing else.

In order: embeddings for the spaces it uses (only rows without a vector), the scores of every
``text`` / ``similar`` / ``near`` it mentions (cached per data version), the maps its cluster names and
``cluster(...)`` calls need (fitted once, then extended by transform), and the named clusters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from labelql import policy as P
from labelql.embed import EmbedReport, Encoder, embed_rows, ensure_space, load_encoder, pending_rows
from labelql.signals import ScoreContext, SignalReport, ensure_scores, policy_signals
from labelql.store import SpaceInfo, Store


@dataclass
class PrepareOptions:
    device: str = "auto"
    precision: str | None = None
    batch_size: int = 32
    workers: int | None = None
    refit: bool = False
    replace: bool = False


@dataclass
class PrepareReport:
    embeddings: list[EmbedReport] = field(default_factory=list)
    signals: list[SignalReport] = field(default_factory=list)
    maps: list[Any] = field(default_factory=list)
    clusters: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "embeddings": [e.to_json() for e in self.embeddings],
            "signals": [
                {"id": s.id, "rows": s.rows, "cached": s.cached, "seconds": round(s.seconds, 4)}
                for s in self.signals
            ],
            "maps": [
                {
                    "projection": m.projection,
                    "map_id": m.map_id,
                    "fitted": m.fitted,
                    "transformed": m.transformed,
                    "cache_hit": m.cache_hit,
                    "seconds": round(m.seconds, 3),
                }
                for m in self.maps
            ],
            "clusters": [
                {
                    "projection": c.projection,
                    "run_id": c.run_id,
                    "noise": c.noise,
                    "predicted": c.predicted,
                    "cache_hit": c.cache_hit,
                    "clusters": [
                        {"cluster": i.cluster, "size": i.size, "name": i.name, "how": i.how}
                        for i in c.clusters
                    ],
                }
                for c in self.clusters
            ],
            "seconds": round(self.seconds, 3),
        }


def used_spaces(policy: P.CheckedPolicy) -> list[str]:
    names: list[str] = []
    for s in policy_signals(policy):
        names.append(s.space)
    for proj in used_projections(policy):
        names.append(policy.projection(proj).space)
    return list(dict.fromkeys(names))


def used_projections(policy: P.CheckedPolicy) -> list[str]:
    names = [c.projection for c in policy.cluster_sets]
    for e in policy.expressions():
        names.extend(n.projection for n in P.walk(e) if isinstance(n, P.ClusterOf))
    return list(dict.fromkeys(names))


def prepare(
    store: Store,
    policy: P.CheckedPolicy,
    options: PrepareOptions | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    encoders: dict[str, Encoder] | None = None,
) -> PrepareReport:
    """Compute what ``policy`` needs; see the module docstring.

    ``encoders`` keeps loaded models between calls (the REPL encodes a new prompt per query; loading
    a CLIP model each time would cost seconds).
    """
    from labelql.clusters import ensure_clusters
    from labelql.maps import ensure_map

    options = options or PrepareOptions()
    t0 = time.perf_counter()
    report = PrepareReport()
    encoders = {} if encoders is None else encoders

    def encoder_for(name: str) -> Encoder:
        if name not in encoders:
            encoders[name] = load_encoder(policy.space(name), options.device, options.precision)
        return encoders[name]

    infos: dict[str, SpaceInfo] = {}
    for name in used_spaces(policy):
        space = policy.space(name)
        if space.provider == "precomputed":
            info = ensure_space(store, space)
        else:
            # The fingerprint check comes before any model load; the model loads only when rows wait.
            existing = ensure_space(store, space, replace=options.replace)
            if existing is not None and not pending_rows(store, existing):
                infos[name] = existing
                continue
            enc = encoder_for(name)
            state = {"total": 0, "done": 0}

            def on_total(n: int, _name: str = name, _state: dict[str, int] = state) -> None:
                _state["total"] = n

            def on_batch(k: int, _done: int, _name: str = name, _state: dict[str, int] = state) -> None:
                _state["done"] += k
                if progress:
                    progress(f"embed {_name}", _state["done"], _state["total"])

            report.embeddings.append(
                embed_rows(
                    store,
                    enc,
                    batch_size=options.batch_size,
                    workers=options.workers,
                    replace=options.replace,
                    on_total=on_total,
                    on_batch=on_batch,
                )
            )
            info = store.space(name)
        assert info is not None
        infos[name] = info

    ctx = ScoreContext(store, infos, encoder_for)
    report.signals = ensure_scores(ctx, policy_signals(policy))
    map_ids: dict[str, int] = {}
    for proj_name in used_projections(policy):
        proj = policy.projection(proj_name)
        if progress:
            progress(f"map {proj_name}", 0, 1)
        m = ensure_map(store, proj, infos[proj.space], partial(ctx.matrix, proj.space), refit=options.refit)
        map_ids[proj_name] = m.map_id
        report.maps.append(m)
    for cset in policy.cluster_sets:
        anchor_keys = {c.name: policy.anchor_set(c.anchors).keys for c in cset.clusters if c.anchors}
        report.clusters.append(
            ensure_clusters(ctx, cset, map_ids[cset.projection], anchor_keys, refit=options.refit)
        )
    report.seconds = time.perf_counter() - t0
    return report
