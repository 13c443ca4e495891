"""The int the context service keys trades by (`TradeTick.id`), computed in Python.

The id itself when it is a number that fits in 63 bits, else the first 8 bytes of its md5,
big-endian, sign bit cleared: the same on every machine and Python version (never the salted
built-in `hash`), and 63 bits wide so a busy day cannot collide. `store.ingest.TICK_ID_SQL` computes
the same value inside DuckDB; `tick_ids` is the form for a small staged day, where a DuckDB
statement costs more before its first row (~2.5 ms) than hashing a few thousand ids here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

MASK_63 = (1 << 63) - 1
_MASK_63 = np.int64(MASK_63)


def tick_id(trade_id: str) -> int:
    """The tick id of one exchange id."""
    if _is_number(trade_id):
        return int(trade_id)
    return int.from_bytes(hashlib.md5(trade_id.encode()).digest()[:8], "big") & MASK_63


def tick_ids(trade_ids: list[str]) -> npt.NDArray[np.int64]:
    """`tick_id` of each id, with the digests of a batch joined and read big-endian at once."""
    if any(map(_is_number, trade_ids)):
        return np.array([tick_id(value) for value in trade_ids], dtype=np.int64)
    md5 = hashlib.md5
    digests = b"".join([md5(value.encode()).digest()[:8] for value in trade_ids])
    return np.frombuffer(digests, dtype=">i8").astype(np.int64) & _MASK_63


def _is_number(trade_id: str) -> bool:
    """TICK_ID_SQL's test: 1 to 19 ASCII digits whose value fits in a signed 64-bit integer."""
    return (trade_id.isascii() and trade_id.isdigit() and len(trade_id) <= 19
            and int(trade_id) <= MASK_63)
