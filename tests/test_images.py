"""check_image: every broken input is caught with a reason, every valid one passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BROKEN, GOOD, bomb_png, corrupt_idat_png, jpeg_bytes, noisy_jpeg
from labelql.images import check_image


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_images_pass_both_checks(tmp_path: Path, name: str) -> None:
    p = tmp_path / Path(name).name
    p.write_bytes(GOOD[name]())
    for verify in ("header", "full"):
        r = check_image(str(p), verify)  # type: ignore[arg-type]
        assert r.ok, (name, verify, r.error)
        assert r.width and r.height and r.sha256 and r.bytes == p.stat().st_size


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_images_fail_with_reason(tmp_path: Path, name: str) -> None:
    p = tmp_path / Path(name).name
    p.write_bytes(BROKEN[name]())
    r = check_image(str(p), "header")
    assert not r.ok and r.error


def test_reasons_are_specific(tmp_path: Path) -> None:
    cases = {
        "empty.jpg": (b"", "empty file"),
        "cut.jpg": (noisy_jpeg()[:3000], "truncated JPEG"),
        "cut_header.jpg": (jpeg_bytes(size=(64, 64))[:300], "corrupt image"),
        "bomb.png": (bomb_png(), "decompression-bomb guard"),
        "text.jpg": (b"plain text", "not an image"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = check_image(str(tmp_path / name))
        assert reason in (r.error or ""), (name, r.error)
    r = check_image(str(tmp_path / "missing.jpg"))
    assert not r.ok and r.error and r.error.startswith("unreadable")


def test_png_with_jpeg_extension_records_true_format(tmp_path: Path) -> None:
    p = tmp_path / "x.jpg"
    p.write_bytes(GOOD["cat/png_named_jpg.jpg"]())
    r = check_image(str(p))
    assert r.ok and r.format == "PNG" and (r.width, r.height) == (20, 10)


def test_exif_rotation_swaps_width_and_height(tmp_path: Path) -> None:
    p = tmp_path / "r.jpg"
    p.write_bytes(jpeg_bytes(size=(40, 20), exif_orientation=6))
    r = check_image(str(p))
    assert (r.width, r.height) == (20, 40)


def test_full_decode_catches_what_the_header_check_cannot(tmp_path: Path) -> None:
    p = tmp_path / "bad_idat.png"
    p.write_bytes(corrupt_idat_png())
    assert check_image(str(p), "header").ok
    full = check_image(str(p), "full")
    assert not full.ok and "corrupt" in (full.error or "")


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    p.write_bytes(jpeg_bytes(size=(100, 100)))
    assert check_image(str(p), max_pixels=10_000).ok
    assert not check_image(str(p), max_pixels=9_999).ok
