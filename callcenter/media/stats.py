"""Reception statistics for one RTP source (RFC 3550 A.1, A.3, A.8), sans-I/O.

``ReceiveStats.update(seq, ts, arrival)`` is called once per received packet with ``arrival`` in
seconds (monotonic); it keeps the extended highest sequence, expected/lost counts and the
interarrival jitter, and produces the report block an RR/SR carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from callcenter.media.rtcp import ReportBlock

MAX_DROPOUT = 3000  # RFC 3550 A.1: larger forward jumps are a restart, not loss
MAX_MISORDER = 100
_SEQ_MOD = 1 << 16


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    packets_received: int
    packets_expected: int
    packets_lost: int  # expected − received; may be negative with duplicates (RFC 3550 A.3)
    jitter: float  # timestamp units
    jitter_ms: float


class ReceiveStats:
    """Sequence, loss and jitter bookkeeping for the source currently received."""

    __slots__ = (
        "clock_rate", "ssrc", "received", "base_seq", "max_seq", "cycles", "bad_seq",
        "jitter", "_transit", "_expected_prior", "_received_prior", "_lost_before",
        "_received_before", "_expected_before",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.received = 0
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq = -1
        self.jitter = 0.0
        self._transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        # totals of earlier sources (a peer may change SSRC mid-call, e.g. between prompts)
        self._lost_before = 0
        self._received_before = 0
        self._expected_before = 0

    def _restart(self, seq: int) -> None:
        # RFC 3550 A.1 init_seq
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self.bad_seq = -1
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit = None

    def update(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> bool:
        """Account one packet. Returns False if it was judged a stray (huge jump, see A.1)."""
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self._received_before += self.received
                self._expected_before += self.expected
                self._lost_before += self.expected - self.received
            self.ssrc = ssrc
            self._restart(seq)
            self.jitter = 0.0
        else:
            udelta = (seq - self.max_seq) % _SEQ_MOD
            if udelta < MAX_DROPOUT:
                if seq < self.max_seq:  # wrapped
                    self.cycles += _SEQ_MOD
                self.max_seq = seq
            elif udelta <= _SEQ_MOD - MAX_MISORDER:
                # A very large jump: accept it only if the next packet follows it (the sender
                # restarted), else drop it as a stray (A.1).
                if seq == self.bad_seq:
                    self._received_before += self.received
                    self._expected_before += self.expected
                    self._lost_before += self.expected - self.received
                    self._restart(seq)
                else:
                    self.bad_seq = (seq + 1) % _SEQ_MOD
                    return False
            # else: duplicate or reordered within MAX_MISORDER; counted, max unchanged
        self.received += 1
        # A.8: D(i-1,i) = (Rj - Ri) - (Sj - Si), J += (|D| - J) / 16, in timestamp units.
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # timestamps wrap at 2**32: fold the difference back to the nearest representation
            if d > 2**31:
                d -= 2**32
            elif d < -(2**31):
                d += 2**32
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit
        return True

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if not self.received:
            return 0
        return self.extended_max - self.base_seq + 1

    def snapshot(self) -> StreamSnapshot:
        expected = self._expected_before + self.expected
        received = self._received_before + self.received
        return StreamSnapshot(
            packets_received=received,
            packets_expected=expected,
            packets_lost=self._lost_before + self.expected - self.received,
            jitter=self.jitter,
            jitter_ms=self.jitter * 1000.0 / self.clock_rate,
        )

    def report_block(self, lsr: int = 0, dlsr: int = 0) -> ReportBlock | None:
        """The block for the next RR/SR (A.3), resetting the per-interval counters."""
        if self.ssrc is None or not self.received:
            return None
        expected = self.expected
        lost = max(-0x800000, min(0x7FFFFF, expected - self.received))
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            cumulative_lost=lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=min(int(self.jitter), 0xFFFFFFFF),
            lsr=lsr,
            dlsr=dlsr,
        )
