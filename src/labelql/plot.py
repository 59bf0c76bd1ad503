"""The projector view: one point per row on a 2-D map, as a PNG (matplotlib) or a self-contained
interactive HTML page (plotly) where hovering shows the key and the policy's scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from labelql.diagnostics import LabelQLError
from labelql.maps import map_coords
from labelql.store import Store

NOISE = "(unclustered)"
NO_GOLD = "(no gold)"


def colour_values(
    store: Store, keys: list[str], color: str, run_id: int | None, policy_run: int | None = None
) -> list[str]:
    """The legend value of every point (``policy_run``: the engine run for --color label / route)."""
    if color == "cluster":
        if run_id is None:
            raise LabelQLError(
                "this map has no clusters", hint='declare them: clusters PROJ: name = text("...")'
            )
        rows = dict(
            store.con.execute(
                "SELECT key, CASE WHEN cluster < 0 THEN ? ELSE coalesce(name, 'cluster ' || cluster) END "
                "FROM cluster_assign WHERE run_id = ?",
                [NOISE, run_id],
            ).fetchall()
        )
        return [rows.get(k, NOISE) for k in keys]
    if color == "gold":
        rows = dict(store.con.execute("SELECT key, any_value(label) FROM gold GROUP BY key").fetchall())
        return [rows.get(k, NO_GOLD) for k in keys]
    if color in ("label", "route"):
        if policy_run is None:
            raise LabelQLError(f"--color {color} needs a run of this policy", hint="run: labelql run POLICY")
        expr = "coalesce(label, '(manual)')" if color == "label" else "route"
        rows = dict(
            store.con.execute(f"SELECT key, {expr} FROM run_rows WHERE run_id = ?", [policy_run]).fetchall()
        )
        return [rows.get(k, "(not in the run)") for k in keys]
    raise LabelQLError(f"unknown colouring {color!r}", hint="use cluster, gold, label or route")


def _palette(values: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    named = sorted(v for v in set(values) if v not in (NOISE, NO_GOLD))
    cmap = colormaps["tab10" if len(named) <= 10 else "tab20"]
    out: dict[str, Any] = {v: cmap(i % cmap.N) for i, v in enumerate(named)}
    out[NOISE] = out[NO_GOLD] = (0.75, 0.75, 0.75, 1.0)
    return out


def plot_png(
    store: Store,
    map_id: int,
    title: str,
    color: str,
    run_id: int | None,
    out: Path,
    policy_run: int | None = None,
) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, xy = map_coords(store, map_id)
    values = colour_values(store, keys, color, run_id, policy_run)
    pal = _palette(values)
    fig, ax = plt.subplots(figsize=(9, 7), dpi=110)
    size = max(2.0, min(30.0, 4000 / max(1, len(keys))))
    arr = np.asarray(values, dtype=object)
    for v in sorted(set(values), key=lambda s: (s in (NOISE, NO_GOLD), s)):
        m = arr == v
        ax.scatter(
            xy[m, 0], xy[m, 1], s=size, color=pal[v], label=f"{v} ({int(m.sum())})", linewidths=0, alpha=0.8
        )
        if v not in (NOISE, NO_GOLD) and color == "cluster":
            cx, cy = np.median(xy[m, 0]), np.median(xy[m, 1])
            ax.annotate(
                v,
                (cx, cy),
                ha="center",
                va="center",
                fontsize=11,
                weight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0},
            )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", markerscale=max(1.0, 12 / size), fontsize=9, frameon=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return len(keys)


def plot_html(
    store: Store,
    map_id: int,
    title: str,
    color: str,
    run_id: int | None,
    out: Path,
    signals: list[tuple[str, str]],
    policy_run: int | None = None,
) -> int:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise LabelQLError("--html needs plotly", hint="pip install plotly") from None
    keys, xy = map_coords(store, map_id)
    values = colour_values(store, keys, color, run_id, policy_run)
    scores: dict[str, dict[str, float]] = {}
    for label, sid in signals:
        scores[label] = dict(
            store.con.execute("SELECT key, value FROM scores WHERE signal = ?", [sid]).fetchall()
        )
    fig = go.Figure()
    arr = np.asarray(values, dtype=object)
    for v in sorted(set(values)):
        idx = np.nonzero(arr == v)[0]
        hover = []
        for i in idx:
            lines = [f"<b>{keys[i]}</b>", f"{color}: {v}"]
            lines += [f"{label} = {scores[label].get(keys[i], float('nan')):.3f}" for label, _ in signals]
            hover.append("<br>".join(lines))
        fig.add_trace(
            go.Scattergl(
                x=xy[idx, 0],
                y=xy[idx, 1],
                mode="markers",
                name=f"{v} ({len(idx)})",
                text=hover,
                hoverinfo="text",
                marker={"size": 5},
            )
        )
    fig.update_layout(
        title=title, template="plotly_white", xaxis={"visible": False}, yaxis={"visible": False}
    )
    fig.write_html(str(out), include_plotlyjs=True, full_html=True)
    return len(keys)


def signal_labels(sids: list[str]) -> list[tuple[str, str]]:
    """Readable labels (text("photo of a dog")) for signal ids."""
    out = []
    for sid in sids:
        kind, args = sid.split("|", 1)
        a = json.loads(args)
        if kind == "text":
            out.append((f'text("{a[1]}")', sid))
        elif kind == "similar":
            out.append((f"similar({', '.join(a[1][:3])})", sid))
        else:
            out.append((f"near({', '.join(a[1][:3])}, {a[2]})", sid))
    return out
