"""What a live follower may claim as covered, per symbol: pure bookkeeping, no I/O, no clock.

Evidence, not hope. A WebSocket session (one subscribe until its disconnect) vouches for the trades
strictly after the millisecond of its first trade F (earlier trades of that millisecond may have
been pushed before the subscription) up to, excluding, the millisecond of its newest trade (more of
that millisecond may still come): coverage 'ws' [T(F) + 1 us, T(newest)), growing with each commit.

The hole before F is bridged by recent-trade (asked after F arrived), which returns the newest N
trades as one contiguous run:
* it proves (oldest, newest) complete, and, when it holds F itself, everything up to F's
  millisecond as well (what precedes F is in it, what follows F came over the socket);
* when it also holds L, the last trade of the previous session, it joins that session exactly
  (coverage from T(L), not just after its oldest trade).
What neither proves, from the previous session's end to the bridge's start, is a gap with a reason.

Rows and coverage leave the book only through `take()` -> the caller commits them in one
transaction -> `committed()`; if the commit fails nothing is lost and nothing is claimed.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

from fetch.market_span import Market, Span
from fetch.models import RecentTail, Trade
from store.coverage import Gap
from store.timeutil import us_to_dt

_RUN = uuid.uuid4().hex[:12]  # session keys name coverage rows: unique across runs and processes
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CoverageClaim:
    """One coverage row to insert (first time) or extend (same key): [start_us, end_us)."""

    key: str
    source: str
    start_us: int
    end_us: int


@dataclass
class Session:
    """One subscription of one symbol, from its first trade on."""

    key: str
    prev_end_us: int | None  # where verified coverage ended before this session
    prev_last_id: str | None  # the last trade of the previous session (at prev_end_us)
    first: Trade | None = None
    newest_us: int | None = None
    newest_id: str | None = None
    why: str = ""  # what broke continuity before this session (shown in a gap's reason)
    bridged: bool = False
    ended: bool = False

    @property
    def claim_start_us(self) -> int | None:
        return self.first.time_us + 1 if self.first is not None else None


@dataclass
class Work:
    """What one commit writes for one symbol."""

    ws: list[Trade] = field(default_factory=list)
    rest: list[Trade] = field(default_factory=list)
    claims: list[CoverageClaim] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.ws or self.rest or self.claims or self.gaps)


def subtract(span: Span, spans: list[Span]) -> list[Span]:
    """`span` minus the union of `spans`, as ordered disjoint spans."""
    (cursor, end), out = span, []
    for a, b in sorted(spans):
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            out.append(Span(cursor, min(a, end)))
        cursor = max(cursor, b)
        if cursor >= end:
            break
    if cursor < end:
        out.append(Span(cursor, end))
    return out


class SpanBook:
    """The evidence of one symbol's live capture, between commits."""

    def __init__(self, market: Market, prev_end_us: int | None = None) -> None:
        self.market = market
        self.prev_end_us = prev_end_us
        self.prev_last_id: str | None = None
        self.session: Session | None = None
        self._ws: list[Trade] = []
        self._rest: list[Trade] = []
        self._claims: dict[str, CoverageClaim] = {}  # newest claim per key, not yet committed
        self._gaps: list[Gap] = []
        self.committed_newest_us: int | None = None
        self.committed_keys: set[str] = set()
        self.last_break = "the follower was not running"

    # -- events -----------------------------------------------------------------------------------
    def start_session(self) -> Session:
        """A (re)subscribe succeeded: a new session whose evidence starts at its first trade."""
        self.end_session()
        self.session = Session(f"ws session {_RUN}-{next(_ids)}", self.prev_end_us, self.prev_last_id,
                               why=self.last_break)
        return self.session

    def on_trades(self, trades: tuple[Trade, ...] | list[Trade]) -> bool:
        """Trades of one message (ascending); True when they open the session (bridge it now)."""
        session = self.session
        if session is None or session.ended or not trades:
            return False
        self._ws.extend(trades)
        opened = session.first is None
        if opened:
            session.first = trades[0]
        newest = max(trades, key=lambda t: t.time_us)
        if session.newest_us is None or newest.time_us >= session.newest_us:
            session.newest_us, session.newest_id = newest.time_us, newest.trade_id
        start = session.claim_start_us
        assert start is not None
        if session.newest_us > start:
            self._claim(CoverageClaim(session.key, "ws", start, session.newest_us))
        return opened

    def end_session(self, reason: str = "") -> None:
        """The socket is gone: the next session is bridged back to this one's newest trade."""
        session = self.session
        if session is None or session.ended:
            return
        session.ended = True
        self.last_break = f"disconnected: {reason}" if reason else "disconnected"
        if session.newest_us is not None:
            self.prev_end_us, self.prev_last_id = session.newest_us, session.newest_id

    def on_bridge(self, session: Session, tail: RecentTail | None, failure: str | None = None) -> list[Gap]:
        """recent-trade's answer (or why there is none) for `session`; returns the gaps recorded."""
        if session.bridged or session.first is None:
            return []
        session.bridged = True
        first = session.first
        spans: list[Span] = []
        if tail is not None and tail.trades and tail.oldest_us is not None and tail.newest_us is not None:
            self._rest.extend(tail.trades)
            ids = {t.trade_id for t in tail.trades}
            start = tail.oldest_us + 1
            if session.prev_last_id is not None and session.prev_last_id in ids and session.prev_end_us is not None:
                start = min(start, session.prev_end_us)
            end = max(tail.newest_us, first.time_us + 1) if first.trade_id in ids else tail.newest_us
            if end > start:
                spans.append(Span(start, end))
                self._claim(CoverageClaim(f"bridge of {session.key}", "rest", start, end))
        gaps = []
        if session.prev_end_us is not None and session.prev_end_us < first.time_us + 1:
            for a, b in subtract(Span(session.prev_end_us, first.time_us + 1), spans):
                gaps.append(Gap("uncovered", a, b, self._reason(a, b, tail, failure, session.why)))
        self._gaps.extend(gaps)
        return gaps

    def _reason(self, a: int, b: int, tail: RecentTail | None, failure: str | None, why: str) -> str:
        lost = f"live capture of {self.market.symbol} missed {us_to_dt(a).isoformat()} .. {us_to_dt(b).isoformat()}"
        cause = f" ({why})" if why else ""
        if failure is not None:
            bridge = f"recent-trade could not bridge it: {failure}"
        elif tail is None or not tail.trades:
            bridge = "recent-trade returned no trades"
        else:
            bridge = (f"recent-trade's newest {tail.limit} trades reach back only to "
                      f"{us_to_dt(tail.oldest_us or 0).isoformat()}")
        return f"{lost}{cause}; {bridge}; the day's archive file will fill it once published"

    def _claim(self, claim: CoverageClaim) -> None:
        self._claims[claim.key] = claim

    # -- commits ----------------------------------------------------------------------------------
    def take(self) -> Work:
        """Everything not yet committed (the book keeps it until `committed`)."""
        return Work(list(self._ws), list(self._rest), list(self._claims.values()), list(self._gaps))

    def committed(self, work: Work) -> None:
        """`work` is durable: forget it (events that arrived meanwhile stay)."""
        del self._ws[: len(work.ws)]
        del self._rest[: len(work.rest)]
        for claim in work.claims:
            if self._claims.get(claim.key) == claim:
                del self._claims[claim.key]
            self.committed_keys.add(claim.key)
        del self._gaps[: len(work.gaps)]
        newest = max((t.time_us for t in work.ws + work.rest), default=None)
        if newest is not None and (self.committed_newest_us is None or newest > self.committed_newest_us):
            self.committed_newest_us = newest

    @property
    def pending_trades(self) -> int:
        return len(self._ws) + len(self._rest)
