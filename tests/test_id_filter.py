"""The id filter's bits and header, with no store: no false negatives, and the false positives it was
designed for."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from store import id_filter
from store.id_filter import BITS_PER_ID, BlockedBloom, Header, filter_path, plan_capacity


def random_ids(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, size=n, dtype=np.int64)


def designed_rate(bits_per_id: float) -> float:
    """A blocked filter's false-positive rate: Poisson ids per 512-bit block, 2 bits in each of 8 words."""
    lam, total, p = 512 / bits_per_id, 0.0, math.exp(-512 / bits_per_id)
    for j in range(1, 400):
        p *= lam / j
        total += p * (1 - (1 - 1 / 64) ** (2 * j)) ** 16
    return total


@pytest.mark.parametrize("seed", range(5))
def test_every_added_id_is_found_whatever_the_ids(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300_000))
    ids = random_ids(seed, n)
    bloom = BlockedBloom.empty(int(rng.integers(16, 400_000)))  # some far over capacity
    bloom.add(ids[: n // 2])
    bloom.add(ids[n // 2:])
    assert bloom.may_contain(ids).all()
    assert bloom.may_contain(ids[::-1]).all()


def test_sequential_numeric_ids_are_spread_and_found() -> None:
    """Numeric trade ids are their own tick ids: neighbours must not land in neighbouring bits."""
    ids = np.arange(10**12, 10**12 + 200_000, dtype=np.int64)
    bloom = BlockedBloom.empty(200_000)
    bloom.add(ids)
    assert bloom.may_contain(ids).all()
    absent = np.arange(10**12 + 200_000, 10**12 + 1_200_000, dtype=np.int64)
    assert bloom.may_contain(absent).sum() <= 5 * designed_rate(BITS_PER_ID) * len(absent) + 5


def test_ids_crowded_into_few_blocks_all_land() -> None:
    """Many ids of one batch share a block: each one's bits must be set, not only the last one's."""
    bloom = BlockedBloom(np.zeros(2 * 8, dtype=np.uint64))
    ids = random_ids(7, 5_000)
    hits_before = bloom.probe_and_add(ids[:50])
    assert not hits_before.any()
    bloom.add(ids[50:])
    assert bloom.may_contain(ids).all()


def test_false_positive_rate_follows_the_design_when_overfilled() -> None:
    """Overfilled to 12 bits an id the rate is measurable (~3e-3): it must match the design's model,
    which is what puts the rate at capacity (48 bits) near 1.5e-7."""
    capacity = 100_000
    bloom = BlockedBloom.empty(capacity)
    bloom.add(random_ids(1, capacity * BITS_PER_ID // 12))
    probes = random_ids(2, 400_000)
    rate = bloom.may_contain(probes).mean()
    expected = designed_rate(12)
    assert expected / 1.5 < rate < expected * 1.5
    assert designed_rate(BITS_PER_ID) < 2e-7


def test_false_positives_at_capacity_are_rare() -> None:
    capacity = 1_000_000
    bloom = BlockedBloom.empty(capacity)
    bloom.add(random_ids(3, capacity))
    assert bloom.may_contain(random_ids(4, 2_000_000)).sum() <= 3  # expected ~0.3


def test_probe_and_add_answers_for_the_filter_before_the_call() -> None:
    bloom = BlockedBloom.empty(10_000)
    old, new = random_ids(5, 1_000), random_ids(6, 1_000)
    bloom.add(old)
    hits = bloom.probe_and_add(np.concatenate([old, new]))
    assert hits[:1_000].all() and hits[1_000:].sum() <= 1
    assert bloom.may_contain(new).all()


def test_capacity_grows_with_what_must_fit() -> None:
    assert plan_capacity(0) == id_filter.MIN_CAPACITY
    for needed in (5_000_000, 45_000_000, 100_000_000):
        assert needed * 1.5 <= plan_capacity(needed) < needed * 1.5 + id_filter.CAPACITY_STEP


def header(**changes: object) -> Header:
    fields = dict(store_id=uuid.uuid4().bytes, generation=3, capacity=100, count=10, blocks=8,
                  boot=id_filter.boot_id() or bytes(16), flags=0)
    fields.update(changes)
    return Header(**fields)  # type: ignore[arg-type]


def test_a_header_survives_packing_and_any_damage_is_noticed() -> None:
    made = header()
    assert Header.unpack(made.pack()) == made
    packed = bytearray(made.pack())
    for position in range(len(packed)):
        damaged = bytearray(packed)
        damaged[position] ^= 0x40
        assert Header.unpack(bytes(damaged)) is None
    assert Header.unpack(b"") is None and Header.unpack(bytes(4096)) is None


def test_a_header_is_trusted_only_for_its_store_generation_and_boot() -> None:
    made = header()
    assert made.trusted_for(made.store_id, 3) == (id_filter.boot_id() is not None)
    assert not made.trusted_for(made.store_id, 4)
    assert not made.trusted_for(uuid.uuid4().bytes, 3)
    other_boot = header(store_id=made.store_id, boot=uuid.uuid4().bytes)
    assert not other_boot.trusted_for(made.store_id, 3)
    synced = header(store_id=made.store_id, boot=uuid.uuid4().bytes, flags=id_filter.SYNCED)
    assert synced.trusted_for(made.store_id, 3)
    assert not header(store_id=made.store_id, count=101).trusted_for(made.store_id, 3)


def test_without_a_boot_id_only_flushed_filters_are_trusted(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(id_filter, "BOOT_ID_PATH", tmp_path / "none")
    store_id = uuid.uuid4().bytes
    assert not header(store_id=store_id, boot=bytes(16)).trusted_for(store_id, 3)
    file = id_filter.FilterFile.create(tmp_path / "f.bloom", store_id, 1_000)
    file.write_header(3, 0)
    found = id_filter.read_header(tmp_path / "f.bloom")
    assert found is not None and found[0].flags & id_filter.SYNCED and found[0].trusted_for(store_id, 3)


def test_filter_files_are_named_after_the_market_safely(tmp_path) -> None:
    assert filter_path(tmp_path / "s.duckdb", "linear", "BTCUSDT").name == "linear-BTCUSDT.bloom"
    odd = filter_path(tmp_path / "s.duckdb", "linear", "../x")
    assert odd.parent == tmp_path / "s.duckdb.ids" and "/" not in odd.name and ".." not in odd.name
