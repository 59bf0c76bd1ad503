"""Shared fixtures: temporary stores, generated images (good and broken), the real photo sample."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "catsdogs-sample"


@pytest.fixture
def sample_dir() -> Path:
    """The 500 real cat and dog photos; tests using it skip cleanly when it is absent."""
    if not SAMPLE.is_dir():
        pytest.skip(f"real photo sample not found at {SAMPLE}")
    return SAMPLE


DEMO_ROWS = 3000


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's simulated store (3,000 rows) with rules/cats_dogs.lql run once on it: maps, clusters,
    scores and one stored run. Built once per test run (UMAP's JIT alone costs ~30 s); tests that write
    to it take a copy with :func:`copy_store`."""
    pytest.importorskip("umap")
    from labelql.checker import check_file
    from labelql.demo import build_demo_store
    from labelql.engine import run_policy
    from labelql.store import Store

    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    build_demo_store(db, rows=DEMO_ROWS)
    with Store.open(db) as s:
        run_policy(s, check_file(REPO / "rules" / "cats_dogs.lql"))
    return db


def copy_store(src: Path, dst_dir: Path) -> Path:
    """A copy of a database and its cache folder (maps, clusters, matrices)."""
    import shutil

    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    if (wal := src.with_name(src.name + ".wal")).exists():
        shutil.copy(wal, dst.with_name(dst.name + ".wal"))
    cache = src.parent / f"{src.stem}_cache"
    if cache.exists():
        shutil.copytree(cache, dst_dir / f"{src.stem}_cache")
    return dst


@pytest.fixture
def store(tmp_path: Path):
    from labelql.store import Store

    s = Store.create(tmp_path / "t.duckdb")
    yield s
    s.close()


def jpeg_bytes(size=(32, 24), color=(200, 100, 50), mode="RGB", exif_orientation: int | None = None) -> bytes:
    im = Image.new(mode, size, color)
    buf = io.BytesIO()
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def png_bytes(im: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny file whose header claims a huge image (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def corrupt_idat_png() -> bytes:
    """Header and end intact, pixel data broken: only a full decode notices."""
    data = bytearray(png_bytes(Image.effect_noise((64, 64), 60).convert("RGB")))
    idat = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    middle = idat + 4 + length // 2
    for i in range(middle, middle + 32):
        data[i] ^= 0xFF
    return bytes(data)


def noisy_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 50).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


GOOD = {
    "cat/plain.jpg": lambda: jpeg_bytes(),
    "cat/png_named_jpg.jpg": lambda: png_bytes(Image.new("RGB", (20, 10), (1, 2, 3))),
    "cat/cmyk.jpg": lambda: jpeg_bytes(mode="CMYK", color=(10, 20, 30, 40)),
    "dog/grey16.png": lambda: png_bytes(Image.new("I;16", (16, 8), 40000)),
    "dog/palette.png": lambda: png_bytes(Image.new("P", (12, 12), 3), transparency=3),
    "dog/rotated.jpg": lambda: jpeg_bytes(size=(40, 20), exif_orientation=6),
    "dog/anim.gif": lambda: _gif(),
    "dog/pic.webp": lambda: _webp(),
    "dog/pic.bmp": lambda: _bmp(),
}
BROKEN = {
    "cat/empty.jpg": lambda: b"",
    "cat/truncated.jpg": lambda: noisy_jpeg()[:3000],
    "cat/cut_header.jpg": lambda: jpeg_bytes(size=(64, 64))[:300],
    "dog/bomb.png": bomb_png,
    "dog/noise.png": lambda: b"\x00\x01garbage" * 30,
    "dog/notes.jpg": lambda: b"hello, I am a text file\n",
}


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8), 1).save(buf, "GIF")
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, "WEBP")
    return buf.getvalue()


def _bmp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, "BMP")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """An ImageFolder (cat/, dog/) holding every good and broken case above, plus a dangling link."""
    root = tmp_path / "images"
    for rel, make in {**GOOD, **BROKEN}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(make())
    (root / "dog" / "dangling.jpg").symlink_to(root / "does-not-exist.jpg")
    (root / "dog" / "readme.txt").write_text("not an image extension: ignored")
    return root


def generate_images(root: Path, per_class: int = 60, seed: int = 0) -> Path:
    """A small ImageFolder of generated pictures (warm 'cat' and cool 'dog' blobs)."""
    import random

    from PIL import ImageDraw

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
