"""Reading and checking image files: the one place that decides whether an image is usable.

:func:`check_image` runs in worker processes during ingestion, so it takes and returns plain data.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Pillow's own hard limit (2 x MAX_IMAGE_PIXELS): past it a header is treated as a decompression bomb.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
_ORIENTATION_TAG = 0x0112
Verify = Literal["header", "full"]


@dataclass(frozen=True)
class ImageCheck:
    """The result of checking one file: facts about a good image, or why it is not one."""

    path: str
    ok: bool
    error: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    bytes: int | None = None
    sha256: str | None = None


def check_image(path: str, verify: Verify = "header", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Read ``path`` and decide whether it is a usable image.

    ``header`` reads the whole file (for its sha256), parses the header and checks that the
    stream is not cut short (JPEG end-of-image marker, PNG ``IEND``, GIF trailer, RIFF/BMP sizes);
    ``full`` also decodes every pixel.  Width and height are as displayed (EXIF rotation applied).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return ImageCheck(path, False, f"unreadable: {e.strerror or e}")
    return check_image_bytes(path, data, verify, max_pixels)


def check_image_bytes(
    path: str, data: bytes, verify: Verify = "header", max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageCheck:
    if not data:
        return ImageCheck(path, False, "empty file (0 bytes)", bytes=0)
    digest = hashlib.sha256(data).hexdigest()

    def fail(msg: str) -> ImageCheck:
        return ImageCheck(path, False, msg, bytes=len(data), sha256=digest)

    # Pillow raises past twice this limit and warns past it; our own check below gives the message.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's warning/exception pair.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "unknown"
                width, height = im.size
                if width * height > max_pixels:
                    return fail(
                        f"image is {width} x {height} = {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,} (decompression-bomb guard); raise --max-pixels to accept it"
                    )
                # PNG keeps EXIF after the pixels: reading it would decode the image, so PNGs skip it.
                if fmt in ("JPEG", "MPO", "TIFF", "WEBP") and ("exif" in im.info or fmt == "TIFF"):
                    orientation = im.getexif().get(_ORIENTATION_TAG)
                    if orientation in (5, 6, 7, 8):
                        width, height = height, width
                if verify == "full":
                    im.load()
                else:
                    problem = _truncation(fmt, data)
                    if problem:
                        return fail(problem)
    except Image.DecompressionBombError as e:
        return fail(
            f"image is over the limit of {max_pixels:,} pixels (decompression-bomb guard): {e}; "
            "raise --max-pixels to accept it"
        )
    except UnidentifiedImageError:
        return fail("not an image (format not recognised)")
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as e:
        return fail(f"corrupt image: {_short(e)}")
    return ImageCheck(path, True, None, width, height, fmt, len(data), digest)


def _truncation(fmt: str, data: bytes) -> str | None:
    """Cheap end-of-stream checks that catch files cut short without decoding them."""
    n = len(data)
    if fmt in ("JPEG", "MPO"):
        # Some cameras pad after the EOI marker, so look for it near the end, not only at it.
        if data.find(b"\xff\xd9", max(0, n - 8192)) < 0:
            return "truncated JPEG (no end-of-image marker)"
    elif fmt == "PNG":
        if data.find(b"IEND", max(0, n - 64)) < 0:
            return "truncated PNG (no IEND chunk)"
    elif fmt == "GIF":
        if not data.rstrip(b"\x00").endswith(b";"):
            return "truncated GIF (no trailer)"
    elif fmt == "WEBP" and n >= 8:
        (riff_size,) = struct.unpack("<I", data[4:8])
        if riff_size + 8 > n:
            return f"truncated WebP ({n} of {riff_size + 8} bytes)"
    elif fmt == "BMP" and n >= 6:
        (bmp_size,) = struct.unpack("<I", data[2:6])
        if bmp_size > n:
            return f"truncated BMP ({n} of {bmp_size} bytes)"
    return None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def check_many(args: tuple[list[str], Verify, int]) -> list[ImageCheck]:
    """Check a chunk of paths (the unit of work handed to a worker process)."""
    paths, verify, max_pixels = args
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return [check_image(p, verify, max_pixels) for p in paths]
