"""Arrow constants built from raw buffers, never from Python values.

pyarrow imports pandas (when it is installed: ~0.2 s) the first time it converts a Python value, a
`pa.scalar("buy")` or the `0` in `pc.equal(array, 0)`. The archive parser and the store's staging
need only a handful of constants, so they take them from here and a refresh never pays for it.
"""

from __future__ import annotations

import functools
import struct

import pyarrow as pa


@functools.lru_cache(maxsize=256)
def string_array(values: tuple[str, ...]) -> pa.Array:
    encoded = [value.encode() for value in values]
    offsets = [0]
    for item in encoded:
        offsets.append(offsets[-1] + len(item))
    buffers = [None, pa.py_buffer(struct.pack(f"<{len(offsets)}i", *offsets)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def string(value: str) -> pa.Scalar:
    """A pa.string() scalar."""
    return string_array((value,))[0]


@functools.lru_cache(maxsize=256)
def int64(value: int) -> pa.Scalar:
    """A pa.int64() scalar."""
    return pa.Array.from_buffers(pa.int64(), 1, [None, pa.py_buffer(struct.pack("<q", value))])[0]


@functools.lru_cache(maxsize=256)
def float64(value: float) -> pa.Scalar:
    """A pa.float64() scalar."""
    return pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(struct.pack("<d", value))])[0]
