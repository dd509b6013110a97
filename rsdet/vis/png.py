"""A PNG encoder for drawn pictures (8-bit RGB, no interlace), written for speed on rsdet's pictures.

PNG (ISO/IEC 15948) stores each scanline behind a filter byte and deflates the lot. Pillow's encoder
tries every filter on every row; rsdet's pictures are mostly images enlarged by pixel repetition
(rsdet/vis/draw.py), so two filters chosen without trying do as well at a fraction of the time:
a row equal to the one above gets filter 2 ("Up", all zeros), any other row filter 1 ("Sub", the
difference to the pixel on its left, zero between repeated pixels). The filtering is array
arithmetic and zlib releases the GIL, so the background writer threads (rsdet/vis/writer.py)
encode while the caller infers. The file is written to a temporary file beside the target and
renamed over it (``rsdet.records.atomic_write_bytes``): a symlink planted at the target is
replaced, never written through.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SUB, _UP = 1, 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def filtered_rows(pixels: np.ndarray) -> np.ndarray:
    """The (H, 1 + 3 W) filtered scanlines of an (H, W, 3) uint8 image (uint8 arithmetic wraps modulo
    256, as the filters are defined)."""
    h, w, c = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(h, w * c)
    out = np.empty((h, w * c + 1), dtype=np.uint8)
    out[:, 0] = _SUB
    out[:, 1 : 1 + c] = rows[:, :c]
    np.subtract(rows[:, c:], rows[:, :-c], out=out[:, 1 + c :])
    if h > 1:
        same = np.flatnonzero((rows[1:] == rows[:-1]).all(axis=1)) + 1
        out[same, 0] = _UP
        out[same, 1:] = 0
    return out


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """The PNG file of an (H, W, 3) uint8 image; ``compress_level`` is zlib's (1: fast, ~10% larger
    files than 6)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {pixels.dtype} {tuple(pixels.shape)}")
    h, w, _ = pixels.shape
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, adaptive filters, no interlace
    data = zlib.compress(filtered_rows(pixels).tobytes(), int(compress_level))
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def write_png(pixels: np.ndarray, path: str | Path, compress_level: int = 1) -> Path:
    """Encode ``pixels`` (H, W, 3 uint8) and write them to ``path`` (folders created; a symlink at
    ``path`` is replaced, not followed)."""
    from rsdet.records import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, encode_png(pixels, compress_level), durable=False)
    return path
