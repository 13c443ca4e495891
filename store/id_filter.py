"""A compact filter of a market's stored tick ids, so a day's uniqueness check reads its own ids only.

Why: the trade key is unique over the whole table. Checked in SQL alone, every ingest semi-joins
its 1.5M tick ids against the market's whole `tick_id` column, and a fresh process reads and
decompresses all of it (0.7 s at 45M rows, 1.6 s at 100M) and DuckDB's buffer pool then holds it.
With this filter the check follows the batch: ids the filter has never seen are new for certain (a
Bloom filter has no false negatives); only its hits are looked up in SQL (`store.ingest`).

The structure (`BlockedBloom`): each id sets 16 bits in one 512-bit block, two in each of its eight
64-bit words, so a probe or an add is one cache line. Positions come from the id through a
splitmix64 finalizer: most tick ids are md5 hashes, but a numeric trade id is its own tick id (spot
ids are sequential numbers), so its bits must be mixed before they index anything. At 48 bits per
id at capacity the false-positive rate is ~1.5e-7 per probe (0.2 false hits in a 1.5M-id day),
~1e-8 at two-thirds of capacity; a filter is rebuilt at 1.5x when its count would pass capacity
(`plan_capacity`). Measured in numpy on this project's 2-core VM, the per-id work (not the memory)
is the cost: two bits per word instead of two blocks halves it, and 23 random reads of a classic
Bloom filter would be far slower still.

Persistence (`<db>.ids/<category>-<symbol>.bloom`): a 4 KiB header, then the bits, memory-mapped.
A batch touches nearly every page of the file, and this VM pays ~2 us per page fault, so a large
batch first asks the kernel to map every page writable in one call (MADV_POPULATE_WRITE).

Deletes need nothing (a stale bit only adds a false positive), so a filter is valid exactly when it
holds every id the store holds. The proof is a per-market generation kept in the store
(`id_generation`), bumped in the transaction of every insert into `trades`, and the store's random
identity (`store_identity`: a new file at the same path is another store). A filter is trusted only
when its header names the same (identity, generation); otherwise it is rebuilt from the store: the
old cost, paid once. A writer that inserts without using the filter deletes it.

The order of writes, and why it is safe:
* bits are set during the transaction, as the batch is probed: later statements of the same
  transaction (the follower commits REST and live rows of a symbol together) must see them. A
  rollback leaves extra bits: harmless;
* the header (generation, count) is written after COMMIT, while the store is still held (DuckDB's
  file lock keeps other processes out, `Store.atomic`'s write lock other threads). A SIGKILL between
  COMMIT and the header leaves the old generation: the next writer rebuilds;
* a rebuilt file is renamed into place with an invalid generation and becomes valid only through the
  header written after COMMIT. Rebuilt inside a transaction that deleted rows and then rolled back,
  it would lack those rows: it never becomes valid;
* a power loss may persist the header before the bits (the page cache writes back in any order), so
  the header records the boot (`/proc/sys/kernel/random/boot_id`): a filter written in another boot
  is trusted only if its bits were fsynced before its header (`SYNCED`). Where there is no boot id,
  the bits are always flushed before the header.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from store.atomic import temp_beside

if TYPE_CHECKING:
    from store.db import Store

log = logging.getLogger("context.backfill")

U64 = np.uint64
Words = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]

WORDS = 8                  # 64-bit words per block: one 64-byte cache line
BITS_PER_ID = 48           # at capacity: ~1.5e-7 false positives per probe
MIN_CAPACITY = 1 << 16     # ids (384 KiB): `refresh --all` keeps one filter per small market
CAPACITY_STEP = 1 << 16
GROWTH = 1.5               # a rebuilt filter holds this many times what it must
_CHUNK = 1 << 16           # ids per vectorized step: temporaries of 4 MiB stay in cache

_GOLDEN = U64(0x9E3779B97F4A7C15)
_M1, _M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_POW2 = U64(1) << np.arange(64, dtype=U64)
_PAIRS = (_POW2[:, None] | _POW2[None, :]).T.ravel()  # [a | b << 6] = bit a | bit b (32 KiB: in cache)
_ALL_SET = U64(0x0101010101010101)  # eight True bytes


def _mix(x: Words) -> Words:
    """splitmix64's finalizer: every output bit depends on every input bit."""
    x = (x ^ (x >> U64(30))) * _M1
    x = (x ^ (x >> U64(27))) * _M2
    return x ^ (x >> U64(31))


def plan_capacity(needed: int) -> int:
    """The ids a filter is built for when it must hold `needed`: room to grow, so rebuilds are rare."""
    return max(MIN_CAPACITY, -(-int(needed * GROWTH) // CAPACITY_STEP) * CAPACITY_STEP)


def blocks_for(capacity: int) -> int:
    return max(2, -(-capacity * BITS_PER_ID // (WORDS * 64)))


def _covers(lines: Words, masks: Words) -> Mask:
    """Per row: every bit of `masks` is set in `lines` (`lines` is overwritten)."""
    np.bitwise_and(lines, masks, out=lines)
    equal = np.ascontiguousarray(lines == masks)  # (n, 8) bools: one uint64 per row
    result: Mask = equal.view(U64)[:, 0] == _ALL_SET
    return result


class BlockedBloom:
    """Bits over `words` (uint64; memory or a mapped file), `len(words) // 8` blocks. Pure: no file."""

    def __init__(self, words: Words) -> None:
        if words.ndim != 1 or len(words) % WORDS or len(words) < 2 * WORDS:
            raise ValueError("a filter is a whole number of blocks (at least 2) of 8 words")
        self.words = words
        self.blocks = words.reshape(-1, WORDS)
        self._nblocks = U64(len(self.blocks))

    @classmethod
    def empty(cls, capacity: int) -> BlockedBloom:
        return cls(np.zeros(blocks_for(capacity) * WORDS, dtype=U64))

    def _locate(self, ids: npt.NDArray[Any]) -> tuple[npt.NDArray[np.intp], Words]:
        """Per id: its block, and the mask of its 16 bits there: two in each word, from 12 hash bits."""
        h1 = _mix(ids.astype(U64, copy=False) ^ _GOLDEN)
        # (upper 32 bits) * nblocks >> 32: an index in [0, nblocks) without a modulo's bias.
        block = (((h1 >> U64(32)) * self._nblocks) >> U64(32)).astype(np.intp)
        pairs = np.empty((len(ids), 2), dtype=U64)
        pairs[:, 0] = _mix(h1 + _GOLDEN)
        pairs[:, 1] = _mix(pairs[:, 0] + _GOLDEN)
        index = pairs.view(np.uint16) & np.uint16(0xFFF)  # (n, 8): one 12-bit pair index per word
        return block, np.take(_PAIRS, index)

    def may_contain(self, ids: npt.NDArray[Any]) -> Mask:
        """False: certainly never added. True: added, or a false positive (rare)."""
        out = np.empty(len(ids), dtype=np.bool_)
        for start in range(0, len(ids), _CHUNK):
            block, mask = self._locate(ids[start:start + _CHUNK])
            out[start:start + _CHUNK] = _covers(np.take(self.blocks, block, axis=0), mask)
        return out

    def add(self, ids: npt.NDArray[Any]) -> None:
        """Set the bits of `ids` (repeats and ids already added are fine)."""
        self.probe_and_add(ids)

    def probe_and_add(self, ids: npt.NDArray[Any]) -> Mask:
        """`may_contain` as it was before the call, and `add`, in one pass over the blocks."""
        out = np.empty(len(ids), dtype=np.bool_)
        for start in range(0, len(ids), _CHUNK):
            block, mask = self._locate(ids[start:start + _CHUNK])
            lines = np.take(self.blocks, block, axis=0)
            merged = lines | mask
            out[start:start + _CHUNK] = _covers(lines, mask)
            self._set(block, mask, merged)
        return out

    def _set(self, block: npt.NDArray[np.intp], mask: Words, merged: Words) -> None:
        """Store `merged` (old | mask) at `block`. Of rows that share a block a fancy assignment keeps
        the last, so those whose bits did not land are ORed in again until none is left (each round
        leaves only the ids that collided in it: a few rounds, on fewer and fewer ids)."""
        while True:
            self.blocks[block] = merged
            missed = np.flatnonzero(~_covers(np.take(self.blocks, block, axis=0), mask))
            if not len(missed):
                return
            block, mask = block[missed], mask[missed]
            merged = np.take(self.blocks, block, axis=0) | mask


# -- the file ------------------------------------------------------------------------------------

MAGIC = b"BYBTIDS\x00"
VERSION = 1
HEADER_SIZE = 4096  # the bits start on a page boundary
_HEADER = struct.Struct("<8sII16sqqqq16s")  # magic, version, flags, store id, generation,
_CRC = struct.Struct("<I")                  # capacity, count, blocks, boot id; then their crc32
SYNCED = 1          # flags: the bits were fsynced before this header was written
INVALID_GENERATION = -1
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if os.uname().sysname == "Linux" else None)


def boot_id() -> bytes | None:
    """This boot's id (Linux), or None where there is none."""
    try:
        return uuid.UUID(BOOT_ID_PATH.read_text().strip()).bytes
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Header:
    store_id: bytes
    generation: int
    capacity: int
    count: int
    blocks: int
    boot: bytes
    flags: int = 0

    def pack(self) -> bytes:
        body = _HEADER.pack(MAGIC, VERSION, self.flags, self.store_id, self.generation, self.capacity,
                            self.count, self.blocks, self.boot)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes) -> Header | None:
        """The header, or None for anything that is not a whole, intact header of this version."""
        size = _HEADER.size
        if len(data) < size + _CRC.size or _CRC.unpack_from(data, size)[0] != zlib.crc32(data[:size]):
            return None
        magic, version, flags, store_id, generation, capacity, count, blocks, boot = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or blocks < 2:
            return None
        return cls(store_id, generation, capacity, count, blocks, boot, flags)

    def trusted_for(self, store_id: bytes, generation: int) -> bool:
        """This header vouches for a filter of store `store_id` at `generation` (see the docstring)."""
        if self.store_id != store_id or self.generation != generation or self.count > self.capacity:
            return False
        return self.flags & SYNCED != 0 or self.boot == (boot_id() or b"")


_SAFE_NAME = re.compile(r"[A-Za-z0-9_]+")


def filter_path(db_path: str | Path, category: str, symbol: str) -> Path:
    """`<db>.ids/<category>-<symbol>.bloom`; a name outside [A-Za-z0-9_] is hex-encoded."""
    def safe(name: str) -> str:
        return name if _SAFE_NAME.fullmatch(name) else "x" + name.encode().hex()
    return Path(f"{db_path}.ids") / f"{safe(category)}-{safe(symbol)}.bloom"


def read_header(path: Path) -> tuple[Header, int] | None:
    """The header of the file at `path` and its inode, if it is whole and its size matches."""
    try:
        with open(path, "rb") as file:
            header = Header.unpack(file.read(HEADER_SIZE))
            stat = os.fstat(file.fileno())
    except OSError:
        return None
    if header is None or stat.st_size != HEADER_SIZE + header.blocks * WORDS * 8:
        return None
    return header, stat.st_ino


class FilterFile:
    """A filter file mapped for reading and writing: its header as last read or written, its bits."""

    def __init__(self, path: Path, header: Header) -> None:
        self.path, self.header = path, header
        with open(path, "r+b") as file:
            self.inode = os.fstat(file.fileno()).st_ino
            self._map = mmap.mmap(file.fileno(), HEADER_SIZE + header.blocks * WORDS * 8)
        self.bloom = BlockedBloom(np.frombuffer(self._map, dtype=U64, offset=HEADER_SIZE))
        self._populated = False

    @classmethod
    def create(cls, path: Path, store_id: bytes, capacity: int) -> FilterFile:
        """A new, empty filter at `path`, not valid until `write_header` (written beside, renamed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        blocks = blocks_for(capacity)
        header = Header(store_id, INVALID_GENERATION, capacity, 0, blocks, bytes(16))
        temp = temp_beside(path)
        try:
            with open(temp, "wb") as file:
                file.write(header.pack().ljust(HEADER_SIZE, b"\0"))
                file.truncate(HEADER_SIZE + blocks * WORDS * 8)  # sparse zeros
            os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
        return cls(path, header)

    def probe_and_add(self, ids: npt.NDArray[Any]) -> Mask:
        self._populate(len(ids))
        return self.bloom.probe_and_add(ids)

    def add(self, ids: npt.NDArray[Any]) -> None:
        self._populate(len(ids))
        self.bloom.add(ids)

    def _populate(self, ids: int) -> None:
        """Before a batch that reaches most pages: one call maps every page writable, instead of a
        page fault each as the batch reaches it."""
        if not self._populated and ids * 4 > len(self.bloom.blocks) // 64 and _POPULATE_WRITE:
            with contextlib.suppress(OSError, ValueError):
                self._map.madvise(_POPULATE_WRITE)
            self._populated = True

    def write_header(self, generation: int, count: int) -> None:
        """Record that the bits now hold the store's ids at `generation` (call after COMMIT)."""
        boot = boot_id()
        flags = 0
        if boot is None:  # no way to tell a reboot: the bits reach the disk before the header does
            self._map.flush()
            flags = SYNCED
        header = Header(self.header.store_id, generation, self.header.capacity, count,
                        self.header.blocks, boot or bytes(16), flags)
        self._map[:HEADER_SIZE] = header.pack().ljust(HEADER_SIZE, b"\0")
        if flags & SYNCED:
            self._map.flush(0, mmap.PAGESIZE)
        self.header = header


# Files mapped by this process, reused while the file on disk is the same one (same inode): a
# refresh of many days or a follower maps the bits once, not once per commit.
_MAPPED: dict[Path, FilterFile] = {}
_MAPPED_MAX = 8


def _mapped(path: Path, header: Header, inode: int) -> FilterFile:
    known = _MAPPED.get(path)
    if known is None or known.inode != inode or known.header.blocks != header.blocks:
        if len(_MAPPED) >= _MAPPED_MAX:
            _MAPPED.clear()
        known = _MAPPED[path] = FilterFile(path, header)
    known.header = header
    return known


def forget_mapped() -> None:
    """Drop this process's mapped filters (tests that rewrite the files behind its back)."""
    _MAPPED.clear()


# -- the store's side ------------------------------------------------------------------------------

STORED_IDS_SQL = "SELECT tick_id FROM trades WHERE category = ? AND symbol = ?"
COUNT_IDS_SQL = "SELECT count(*) AS count FROM trades WHERE category = ? AND symbol = ?"


@dataclass
class MarketFilter:
    """One market's filter within one transaction: probed and added to by its ingests, its header
    written once the transaction commits (`Store.on_commit`)."""

    file: FilterFile
    generation: int
    count: int
    rebuilt: bool = False
    stale_hits: int = 0
    damaged: bool = False  # a stored id it answered "never seen" for: its bits cannot be trusted
    _closed: bool = field(default=False, repr=False)

    def probe_and_add(self, ids: npt.NDArray[Any]) -> Mask:
        self.count += len(ids)  # an upper bound: repeats and duplicates count too
        return self.file.probe_and_add(ids)

    def inserted(self, generation: int) -> None:
        self.generation = generation

    def committed(self) -> None:
        """After COMMIT: the header names the generation the bits now hold."""
        try:
            if self.damaged:
                log.warning("id filter %s missed a stored id (damaged bits); it is rebuilt at the next "
                            "ingest", self.file.path)
                _discard(self.file.path)
                return
            if self.stale_hits > STALE_HITS_LIMIT:  # many bits of deleted rows: start afresh next time
                log.info("id filter %s: %d false hits; it is rebuilt at the next ingest", self.file.path,
                         self.stale_hits)
                _discard(self.file.path)
                return
            self.file.write_header(self.generation, min(self.count, self.file.header.capacity))
        except OSError as error:  # the data is committed; an unwritten header only costs a rebuild
            log.warning("id filter %s not updated (%s); it is rebuilt at the next ingest", self.file.path, error)


STALE_HITS_LIMIT = 10_000


def _discard(path: Path) -> None:
    _MAPPED.pop(path, None)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def market_filter(store: Store, category: str, symbol: str, *, rebuild: bool, extra: int,
                  expected_more: int = 0, state: tuple[bytes, int] | None = None) -> MarketFilter | None:
    """The market's filter for this transaction (call inside `store.atomic()`), able to take `extra`
    more ids: the one this transaction already uses, the file if it is trusted, else a rebuild from
    the store when `rebuild`; None when there is none (an untrusted file is then deleted: the caller
    inserts without it). A rebuild makes room for `expected_more` ids too (what the rest of the run
    will add): it reads every stored id while the store is held, so a run of many busy days sized
    one day at a time would pay it again every few days (a reader waited 2.6 s behind one).
    `state` (`states_many`) spares a many-market commit a query per market. A rebuild always reads
    the store itself, never a summary of it: a summary edited by hand must not empty the filter."""
    known = _in_scope(store, category, symbol, extra)
    if known is not None:
        return known
    state = state or states_many(store, [(category, symbol)])[0]
    trusted = _trusted_file(store, category, symbol, extra, state)
    if trusted is not None:
        return trusted
    if not rebuild:
        _discard(filter_path(store.path, category, symbol))
        return None
    count = _stored_counts(store, [(category, symbol)])[0]
    return _rebuild(store, category, symbol, state, count, extra + expected_more)


def market_filters(store: Store, markets: list[tuple[str, str]], *, extras: list[int], expected_more: list[int],
                   states: list[tuple[bytes, int]]) -> list[MarketFilter]:
    """`market_filter(..., rebuild=True)` for many distinct markets: the stored ids of those to
    rebuild are counted in one statement (per market, the count cost a whole market of small days
    more than their filters' probes)."""
    found = [_in_scope(store, c, s, extra) or _trusted_file(store, c, s, extra, state)
             for (c, s), extra, state in zip(markets, extras, states, strict=True)]
    todo = [k for k, known in enumerate(found) if known is None]
    counts = _stored_counts(store, [markets[k] for k in todo])
    for k, count in zip(todo, counts, strict=True):
        category, symbol = markets[k]
        found[k] = _rebuild(store, category, symbol, states[k], count, extras[k] + expected_more[k])
    return [known for known in found if known is not None]


def _in_scope(store: Store, category: str, symbol: str, extra: int) -> MarketFilter | None:
    """The filter this transaction already uses, if it has room for `extra` more ids."""
    known = store.scope.get(("id_filter", category, symbol))
    if isinstance(known, MarketFilter) and known.count + extra <= known.file.header.capacity:
        return known
    return None


def _trusted_file(store: Store, category: str, symbol: str, extra: int,
                  state: tuple[bytes, int]) -> MarketFilter | None:
    """The market's file, in use for this transaction, if its header vouches for the market's
    `state` and it has room for `extra` more ids, and the transaction holds no filter of the market
    yet (one it holds without room is rebuilt, not reread)."""
    if isinstance(store.scope.get(("id_filter", category, symbol)), MarketFilter):
        return None
    store_id, generation = state
    path = filter_path(store.path, category, symbol)
    found = read_header(path)
    if found is None or not found[0].trusted_for(store_id, generation) or found[0].count + extra > found[0].capacity:
        return None
    return _in_use(store, category, symbol, MarketFilter(_mapped(path, *found), generation, found[0].count))


def _in_use(store: Store, category: str, symbol: str, market: MarketFilter) -> MarketFilter:
    store.scope[("id_filter", category, symbol)] = market
    store.on_commit.append(market.committed)
    return market


def _stored_counts(store: Store, markets: list[tuple[str, str]]) -> list[int]:
    """How many trades the store holds for each market, in one statement: a branch per market, each
    filtered on its own so the table's zone maps skip the other markets' row groups."""
    if not markets:
        return []
    sql = " UNION ALL ".join([COUNT_IDS_SQL.replace("SELECT ", f"SELECT {k} AS k, ", 1)
                              for k in range(len(markets))])
    rows = store.query(f"SELECT count FROM ({sql}) ORDER BY k", [v for market in markets for v in market])
    return [int(row[0]) for row in rows]


def _rebuild(store: Store, category: str, symbol: str, state: tuple[bytes, int], count: int,
             extra: int) -> MarketFilter:
    """A filter of every id the store holds for the market (`count` of them, as this transaction
    sees it), in use for this transaction."""
    path = filter_path(store.path, category, symbol)
    _discard(path)
    store_id, generation = state
    file = FilterFile.create(path, store_id, plan_capacity(count + extra))
    for batch in store.query_batches(STORED_IDS_SQL, [category, symbol]) if count else ():  # one batch at a time
        file.add(batch.column(0).to_numpy(zero_copy_only=False))
    log.info("id filter %s rebuilt from %d stored ids (capacity %d)", path, count, file.header.capacity)
    _MAPPED[path] = file
    return _in_use(store, category, symbol, MarketFilter(file, generation, count, rebuilt=True))


# A market's store identity and generation, and the bump every insert into trades makes to the
# generation in its transaction: for many markets in one statement each (`store.ingest_many`).
_MARKETS = "(SELECT unnest(?::VARCHAR[]) AS category, unnest(?::VARCHAR[]) AS symbol, unnest(?::INTEGER[]) AS k)"
STATES_SQL = f"""
    SELECT m.k, (SELECT store_id FROM store_identity LIMIT 1), coalesce(g.generation, 0)
    FROM {_MARKETS} m LEFT JOIN id_generation g USING (category, symbol)
    ORDER BY m.k"""
ENSURE_GENERATIONS_SQL = f"""
    INSERT INTO id_generation (category, symbol, generation)
    SELECT m.category, m.symbol, 0 FROM {_MARKETS} m
    WHERE NOT EXISTS (SELECT 1 FROM id_generation g WHERE g.category = m.category AND g.symbol = m.symbol)"""
BUMP_GENERATIONS_SQL = f"""
    UPDATE id_generation g SET generation = g.generation + 1 FROM {_MARKETS} m
    WHERE g.category = m.category AND g.symbol = m.symbol
    RETURNING g.category, g.symbol, g.generation"""


def _markets_params(markets: list[tuple[str, str]]) -> list[object]:
    return [[c for c, _ in markets], [s for _, s in markets], list(range(len(markets)))]


def states_many(store: Store, markets: list[tuple[str, str]]) -> list[tuple[bytes, int]]:
    """The store's identity and the generation of each (category, symbol), in order."""
    rows = store.query(STATES_SQL, _markets_params(markets))
    return [state_of(store_id, generation) for _, store_id, generation in rows]


def state_of(store_id: object, generation: int | None) -> tuple[bytes, int]:
    """A market's state from the store's `store_identity.store_id` and its `id_generation` (or 0):
    for queries that ask for it beside other things (`store.ingest_many`)."""
    return (uuid.UUID(str(store_id)).bytes if store_id else bytes(16), int(generation or 0))


def bump_generations(store: Store, markets: list[tuple[str, str]]) -> list[int]:
    """Bump the generation of each distinct (category, symbol) in the current transaction; the new
    ones, in order."""
    params = _markets_params(markets)
    store.execute(ENSURE_GENERATIONS_SQL, params)
    found = {(category, symbol): generation for category, symbol, generation in store.query(BUMP_GENERATIONS_SQL, params)}
    return [int(found[market]) for market in markets]
