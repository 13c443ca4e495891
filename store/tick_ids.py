"""The int the context service keys trades by (`TradeTick.id`), in Python and in DuckDB SQL.

The id itself when it is a number that fits in 63 bits, else the first 8 bytes of its md5,
big-endian, sign bit cleared: the same on every machine and Python version (never the salted
built-in `hash`), and 63 bits wide so a busy day cannot collide. `TICK_ID_SQL` computes the same
value inside DuckDB (`verify` checks every stored row against it); `tick_ids` is the form for a
small staged day, where a DuckDB statement costs more before its first row (~2.5 ms) than hashing a
few thousand ids here. Importing this module costs no more than `hashlib` (numpy loads on use).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MASK_63 = (1 << 63) - 1


def tick_id(trade_id: str) -> int:
    """The tick id of one exchange id."""
    if _is_number(trade_id):
        return int(trade_id)
    return int.from_bytes(hashlib.md5(trade_id.encode()).digest()[:8], "big") & MASK_63


def tick_ids(trade_ids: list[str]) -> npt.NDArray[np.int64]:
    """`tick_id` of each id, with the digests of a batch joined and read big-endian at once."""
    import numpy as np

    if any(map(_is_number, trade_ids)):
        return np.array([tick_id(value) for value in trade_ids], dtype=np.int64)
    md5 = hashlib.md5
    digests = b"".join([md5(value.encode()).digest()[:8] for value in trade_ids])
    return np.frombuffer(digests, dtype=">i8").astype(np.int64) & np.int64(MASK_63)


def _is_number(trade_id: str) -> bool:
    """TICK_ID_SQL's test: 1 to 19 ASCII digits whose value fits in a signed 64-bit integer."""
    return (trade_id.isascii() and trade_id.isdigit() and len(trade_id) <= 19
            and int(trade_id) <= MASK_63)


# ---- the same value in DuckDB SQL ----------------------------------------------------------------

def _swapped_sql(low: str) -> str:
    """The tick id of the low 64 bits of an id's `md5_number` (the UBIGINT `low`): bytes 0..7 of the
    digest are stored there in reverse order, swapped back with shifts, sign bit cleared."""
    parts = []
    for k in range(8):  # byte k (bits 8k..8k+7) moves to byte 7-k
        shift = 8 * (7 - 2 * k)
        if shift > 0:
            parts.append(f"(({low} & {0xFF << (8 * k)}) << {shift})")
        else:
            parts.append(f"(({low} >> {-shift}) & {0xFF << (8 * (7 - k))})")
    return f"CAST(({' | '.join(parts)}) & 9223372036854775807 AS BIGINT)"


def _tick_hash_sql(column: str) -> str:
    """First 8 bytes of md5(column), big-endian, sign bit cleared, as BIGINT, in one expression.

    About 3x faster than slicing and parsing the hex string of `md5`, but DuckDB evaluates the
    `md5_number` written in each of the eight parts again (measured: 0.66 s for 1.5M ids against
    0.11 s with the digest computed once in a subquery, `TICK_ID_OF_PARTS_SQL`): for a batch, not
    for a whole table."""
    return _swapped_sql(f"CAST(md5_number({column}) & 18446744073709551615 AS UBIGINT)")


def tick_number_sql(column: str) -> str:
    """The id in `column` (a constant name) when it is a number that fits in 63 bits, else NULL.
    The length test spares the regex the 36-character UUIDs (a quarter of the expression's cost)."""
    return (f"CASE WHEN length({column}) <= 19 AND regexp_full_match({column}, '[0-9]{{1,19}}') "
            f"THEN TRY_CAST({column} AS BIGINT) END")


# TradeTick.id in SQL: the id when it is a number that fits in 63 bits, else the first 8 bytes of
# its md5 read big-endian with the sign bit cleared. `tick_id` is the Python twin.
TICK_ID_SQL = f"coalesce({tick_number_sql('trade_id')}, {_tick_hash_sql('trade_id')})"


def md5_low_sql(column: str) -> str:
    """The `md5_low` part of the id in `column`, for rows whose `tick_number` (a column of the
    subquery below) is NULL."""
    return f"CASE WHEN tick_number IS NULL THEN CAST(md5_number({column}) & 18446744073709551615 AS UBIGINT) END"


# TICK_ID_SQL's value from `tick_number_sql`'s and `md5_low_sql`'s columns (a subquery computes
# each once): the form for a scan of a whole table (`verify`).
TICK_ID_OF_PARTS_SQL = f"coalesce(tick_number, {_swapped_sql('md5_low')})"
