"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-I/O.

The layer never touches sockets or the clock: callers pass ``now`` to every method, read
``get_timer()`` to know when to call ``handle_timer(now)`` next, and drain ``outgoing`` (bytes with
their destination) and ``events`` (what the transaction user must see). Retransmissions of requests
are absorbed here; the TU sees each request and each response once.

Timer names follow §17 (A–K) and RFC 6026 (L, M). Over reliable transports the retransmit timers
(A, E, G) never run and the wait timers D, I, J, K are zero.

A request the transport could not deliver (connect refused, TLS certificate refused, handshake timed
out) comes back as a :class:`TransportFailure`, a local 503: its client transaction ends at once and
the TU sees the 503 (§17.1.4, §8.1.3.1) instead of waiting for timer B.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from enum import Enum

from callcenter.sip.message import Headers, SipParseError, SipRequest, SipResponse
from callcenter.sip.parser import parse_message
from callcenter.sip.uri import Via, parse_name_addr, parse_via

T1 = 0.5
T2 = 4.0
T4 = 5.0
MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class Addr:
    """Where a message came from or goes to: transport ("udp", "tcp", "tls") and IP/port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# --- events for the transaction user -----------------------------------------------------------


@dataclass(slots=True)
class RequestReceived:
    """A new request (not a retransmission). ACKs for 2xx arrive here with ``transaction=None``."""

    request: SipRequest
    source: Addr
    transaction: ServerTransaction | None


@dataclass(slots=True)
class ResponseReceived:
    response: SipResponse
    transaction: ClientTransaction


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B/F (no final response) or H (no ACK for our non-2xx final response)."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(slots=True)
class StrayResponse:
    """A response matching no client transaction: a retransmitted 2xx to an INVITE whose
    transaction ended (the TU must re-send its ACK, §13.2.2.4) or garbage."""

    response: SipResponse
    source: Addr


Event = RequestReceived | ResponseReceived | TransactionTimeout | StrayResponse


class TransportFailure(SipResponse):
    """The 503 a transport error stands for (§8.1.3.1), made here and never sent; ``error`` says what
    failed ("connection refused", "certificate verify failed: self-signed certificate", ...)."""

    __slots__ = ("error",)

    def __init__(self, request: SipRequest, error: str) -> None:
        headers = Headers()
        for name, value in request.headers:
            if name in ("Via", "From", "To", "Call-ID", "CSeq"):  # what matches it to its transaction
                headers.add(name, value)
        super().__init__(503, "Service Unavailable", headers)
        self.error = error


def transport_failure(data: bytes, error: str) -> TransportFailure | None:
    """For bytes a transport could not deliver: the local 503 their request's client transaction must
    hear (the transport hands it in as if received), or None for an ACK, a response or garbage."""
    try:
        message = parse_message(data)
    except SipParseError:
        return None
    if not isinstance(message, SipRequest) or message.method == "ACK":
        return None
    return TransportFailure(message, error)


# --- transactions ----------------------------------------------------------------------------


class _Transaction:
    __slots__ = ("_interval", "_seq", "_timer", "deadline", "dest", "key", "last_sent", "layer", "state")

    def __init__(self, layer: TransactionLayer, key: tuple[str, ...], dest: Addr) -> None:
        self.layer = layer
        self.key = key
        self.dest = dest
        self.state = State.TRYING
        self.deadline: float | None = None  # when `_timer` fires
        self._timer = ""
        self._interval = 0.0
        self._seq = 0  # bumps on every (re)arm so stale heap entries are skipped
        self.last_sent: bytes | None = None

    def _arm(self, name: str, at: float) -> None:
        self._timer = name
        self.deadline = at
        self._seq += 1
        self.layer._schedule(self, at, self._seq)

    def _disarm(self) -> None:
        self._timer = ""
        self.deadline = None
        self._seq += 1

    def _send(self, data: bytes) -> None:
        self.last_sent = data
        self.layer.outgoing.append((data, self.dest))

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._disarm()
        self.layer._remove(self)

    def fire(self, now: float) -> None:
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """ICT (§17.1.1 + RFC 6026 §8.4) or NICT (§17.1.2)."""

    __slots__ = ("_retransmit_until", "final_response", "is_invite", "request", "user_data")

    def __init__(
        self, layer: TransactionLayer, key: tuple[str, ...], request: SipRequest, dest: Addr
    ) -> None:
        super().__init__(layer, key, dest)
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.state = State.CALLING if self.is_invite else State.TRYING
        self._retransmit_until = 0.0  # timer B / F deadline
        self.user_data: object = None
        self.final_response: SipResponse | None = None

    def start(self, now: float) -> None:
        self._send(self.request.serialize())
        self._retransmit_until = now + 64 * T1
        if self.dest.reliable:
            self._arm("B" if self.is_invite else "F", self._retransmit_until)
        else:
            self._interval = T1
            self._arm("A" if self.is_invite else "E", now + T1)

    def fire(self, now: float) -> None:
        timer = self._timer
        if timer in ("A", "E"):
            if now >= self._retransmit_until:
                self.layer.events.append(TransactionTimeout(self))
                self._terminate()
                return
            assert self.last_sent is not None
            self.layer.outgoing.append((self.last_sent, self.dest))
            # INVITE doubles without bound (§17.1.1.2); non-INVITE caps at T2 (§17.1.2.2),
            # and in Proceeding retransmits every T2.
            if timer == "A":
                self._interval *= 2
            else:
                self._interval = T2 if self.state == State.PROCEEDING else min(self._interval * 2, T2)
            self._arm(timer, min(now + self._interval, self._retransmit_until))
        elif timer in ("B", "F"):
            self.layer.events.append(TransactionTimeout(self))
            self._terminate()
        else:  # D, K, M: the wait for stray retransmissions is over
            self._terminate()

    def receive(self, response: SipResponse, now: float) -> None:
        status = response.status
        state = self.state
        if isinstance(response, TransportFailure):
            # §17.1.4: inform the TU and go straight to Terminated (no ACK: nothing could carry it).
            if state in (State.CALLING, State.TRYING, State.PROCEEDING):
                self.final_response = response
                self.layer.events.append(ResponseReceived(response, self))
                self._terminate()
            return
        if self.is_invite:
            if state in (State.CALLING, State.PROCEEDING):
                if status < 200:
                    if state == State.CALLING:
                        self.state = State.PROCEEDING
                        self._disarm()  # no more A; B no longer applies in Proceeding (§17.1.1.2)
                    self.layer.events.append(ResponseReceived(response, self))
                elif status < 300:
                    self.state = State.ACCEPTED  # RFC 6026 §8.4: absorb nothing, pass every 2xx up
                    self.final_response = response
                    self._arm("M", now + 64 * T1)
                    self.layer.events.append(ResponseReceived(response, self))
                else:
                    self.state = State.COMPLETED
                    self.final_response = response
                    self._send(self._ack_for(response).serialize())
                    self._arm("D", now + (0.0 if self.dest.reliable else 32.0))
                    self.layer.events.append(ResponseReceived(response, self))
            elif state == State.ACCEPTED and 200 <= status < 300:
                self.layer.events.append(ResponseReceived(response, self))
            elif state == State.COMPLETED and status >= 300:
                assert self.last_sent is not None
                self.layer.outgoing.append((self.last_sent, self.dest))  # re-ACK
            return
        if state in (State.TRYING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self.layer.events.append(ResponseReceived(response, self))
            else:
                self.state = State.COMPLETED
                self.final_response = response
                self._arm("K", now + (0.0 if self.dest.reliable else T4))
                self.layer.events.append(ResponseReceived(response, self))

    def _ack_for(self, response: SipResponse) -> SipRequest:
        """ACK for a non-2xx final response (§17.1.1.3): same branch, hop-by-hop."""
        req = self.request
        headers = Headers()
        top_via = req.headers.get("Via")
        if top_via is not None:
            headers.add("Via", top_via)
        for name in ("Route",):
            for value in req.headers.get_all(name):
                headers.add(name, value)
        headers.add("Max-Forwards", "70")
        headers.add("From", req.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or req.headers.get("To") or "")
        headers.add("Call-ID", req.call_id)
        headers.add("CSeq", f"{req.cseq()[0]} ACK")
        return SipRequest("ACK", req.uri, headers)


class ServerTransaction(_Transaction):
    """IST (§17.2.1 + RFC 6026 §8.7) or NIST (§17.2.2)."""

    __slots__ = ("_give_up_at", "is_invite", "last_status", "request", "user_data")

    def __init__(
        self, layer: TransactionLayer, key: tuple[str, ...], request: SipRequest, dest: Addr
    ) -> None:
        super().__init__(layer, key, dest)
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.state = State.PROCEEDING if self.is_invite else State.TRYING
        self._give_up_at = 0.0
        self.user_data: object = None
        self.last_status = 0

    def respond(self, response: SipResponse, now: float) -> None:
        """Send a response from the TU; ignored once a final response went out."""
        status = response.status
        if self.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED, State.ACCEPTED):
            return
        self.last_status = status
        self._send(response.serialize())
        if status < 200:
            if not self.is_invite:
                self.state = State.PROCEEDING
            return
        if self.is_invite:
            if status < 300:
                # RFC 6026 §8.7 Accepted. The 2xx is retransmitted (T1 doubling to T2) until the
                # TU reports the ACK, on any transport (§13.3.1.4: proxies may be on UDP); giving up
                # at 64*T1 (timer L) reports a timeout so the TU can send BYE.
                self.state = State.ACCEPTED
                self._give_up_at = now + 64 * T1
                self._interval = T1
                self._arm("2xx", now + T1)
            else:
                self.state = State.COMPLETED
                self._give_up_at = now + 64 * T1
                if self.dest.reliable:
                    self._arm("H", self._give_up_at)
                else:
                    self._interval = T1
                    self._arm("G", now + T1)
        else:
            self.state = State.COMPLETED
            self._arm("J", now + (0.0 if self.dest.reliable else 64 * T1))

    @property
    def acked(self) -> bool:
        return self._timer == "L"

    def ack_received(self, now: float) -> None:
        """The TU matched an ACK for our 2xx (§13.3.1.4): stop retransmitting, absorb until L."""
        if self.state == State.ACCEPTED and self._timer == "2xx":
            self._arm("L", self._give_up_at)

    def receive_retransmission(self, request: SipRequest, now: float) -> None:
        if request.method == "ACK":
            if self.is_invite and self.state == State.COMPLETED:
                self.state = State.CONFIRMED
                self._arm("I", now + (0.0 if self.dest.reliable else T4))
            return
        # A retransmitted request gets the last response again (§17.2.1, §17.2.2); none in Trying.
        # In Accepted the INVITE is absorbed (RFC 6026 §8.7); our 2xx timer keeps resending.
        if self.last_sent is not None and self.state in (State.PROCEEDING, State.COMPLETED):
            self.layer.outgoing.append((self.last_sent, self.dest))

    def fire(self, now: float) -> None:
        timer = self._timer
        if timer == "2xx":
            if now >= self._give_up_at:
                self.layer.events.append(TransactionTimeout(self))  # no ACK: TU sends BYE
                self._terminate()
                return
            assert self.last_sent is not None
            self.layer.outgoing.append((self.last_sent, self.dest))
            self._interval = min(self._interval * 2, T2)
            self._arm("2xx", min(now + self._interval, self._give_up_at))
        elif timer == "G":
            if now >= self._give_up_at:
                self.layer.events.append(TransactionTimeout(self))
                self._terminate()
                return
            assert self.last_sent is not None
            self.layer.outgoing.append((self.last_sent, self.dest))
            self._interval = min(self._interval * 2, T2)
            self._arm("G", min(now + self._interval, self._give_up_at))
        elif timer == "H":
            self.layer.events.append(TransactionTimeout(self))
            self._terminate()
        else:  # I, J, L
            self._terminate()


# --- the layer ---------------------------------------------------------------------------------


def _via_of(message: SipRequest | SipResponse) -> Via:
    vias = message.headers.get_all("Via")
    if not vias:
        raise SipParseError("missing Via")
    return parse_via(vias[0])


def server_key(request: SipRequest) -> tuple[str, ...]:
    """§17.2.3 matching: branch + sent-by + method (ACK matches its INVITE); RFC 2543 fallback."""
    via = _via_of(request)
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    sent_by = f"{via.host}:{via.port or 5060}"
    if branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by, method)
    # RFC 2543 peers: Call-ID, From tag, CSeq number, top Via, method.
    from_tag = parse_name_addr(request.headers.get("From") or "").tag or ""
    return (request.call_id, from_tag, str(request.cseq()[0]), str(via), method)


class TransactionLayer:
    """All transactions of one endpoint, their timers, and the wire output."""

    def __init__(self) -> None:
        self.outgoing: list[tuple[bytes, Addr]] = []
        self.events: deque[Event] = deque()
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self.client: dict[tuple[str, ...], ClientTransaction] = {}
        self._heap: list[tuple[float, int, int, _Transaction]] = []
        self._tiebreak = itertools.count()

    # timers
    def _schedule(self, txn: _Transaction, at: float, seq: int) -> None:
        heapq.heappush(self._heap, (at, next(self._tiebreak), seq, txn))

    def _remove(self, txn: _Transaction) -> None:
        table: dict[tuple[str, ...], ServerTransaction] | dict[tuple[str, ...], ClientTransaction] = (
            self.server if isinstance(txn, ServerTransaction) else self.client
        )
        if table.get(txn.key) is txn:
            del table[txn.key]

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            at, _, seq, txn = heap[0]
            if txn._seq == seq and txn.deadline == at:
                return at
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, seq, txn = heapq.heappop(heap)
            if txn._seq == seq and txn.deadline == at:
                txn.deadline = None
                txn.fire(now)

    # inbound
    def receive_request(self, request: SipRequest, source: Addr, now: float) -> None:
        """Match to a server transaction or create one; raises SipParseError on unusable Via/CSeq."""
        key = server_key(request)
        txn = self.server.get(key)
        if txn is not None:
            if request.method == "ACK" and txn.state == State.ACCEPTED:
                # RFC 6026 §7.1: an ACK matching an INVITE transaction in Accepted (an RFC 2543 peer,
                # or one reusing the INVITE branch) acknowledges our 2xx: it goes to the TU.
                self.events.append(RequestReceived(request, source, None))
                return
            txn.receive_retransmission(request, now)
            return
        if request.method == "ACK":
            # ACK for a 2xx (new branch, §17.1.1.3) or for a transaction long gone: the TU's business.
            self.events.append(RequestReceived(request, source, None))
            return
        txn = ServerTransaction(self, key, request, source)
        self.server[key] = txn
        self.events.append(RequestReceived(request, source, txn))

    def receive_response(self, response: SipResponse, source: Addr, now: float) -> None:
        try:
            via = _via_of(response)
            method = response.cseq()[1]
        except SipParseError:
            return  # §18.1.2: a response we cannot match is discarded silently
        txn = self.client.get((via.branch or "", method))
        if txn is None:
            self.events.append(StrayResponse(response, source))
            return
        txn.receive(response, now)

    # outbound
    def send_request(self, request: SipRequest, dest: Addr, now: float) -> ClientTransaction:
        """Start a client transaction; the request must carry its top Via with a fresh branch."""
        via = _via_of(request)
        key = (via.branch or "", request.method)
        txn = ClientTransaction(self, key, request, dest)
        self.client[key] = txn
        txn.start(now)
        return txn

    def send_stateless(self, data: bytes, dest: Addr) -> None:
        """ACKs for 2xx and 2xx retransmissions travel outside any transaction."""
        self.outgoing.append((data, dest))

    def find_invite_server(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL targets (§9.2: same key but the method)."""
        key = server_key(cancel)
        return self.server.get((*key[:-1], "INVITE"))
