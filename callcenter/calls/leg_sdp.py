"""One call leg's side of SDP offer/answer (RFC 3264), shared by the caller's leg and agents' legs.

It owns what stays the same across the leg's offers and answers — the origin's session id with a version
that grows with every new description (RFC 4566 §5.2), our address and packet time — and applies what
was agreed to the leg's RTP session.
"""

from __future__ import annotations

import secrets

from callcenter.media import sdp
from callcenter.media.session import RtpSession
from callcenter.sip.message import SipRequest


class LegSdp:
    def __init__(self, ptime_ms: int, local_ip: str = "") -> None:
        self.ptime_ms = ptime_ms
        self.local_ip = local_ip
        self.session_id = secrets.randbelow(2**31)
        self.version = 0
        self.media: sdp.NegotiatedMedia | None = None  # the latest agreed media

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def offer(self, rtp: RtpSession) -> sdp.SessionDescription:
        """Our offer: PCMU/PCMA and telephone-event on the leg's RTP port."""
        return sdp.make_offer(
            self.local_ip,
            rtp.local_port,
            session_id=self.session_id,
            version=self._next_version(),
            ptime=self.ptime_ms,
        )

    def answer(self, body: bytes, rtp: RtpSession) -> bytes | int:
        """Our answer to the peer's offer in ``body``, applied to ``rtp``; or the status to refuse it
        with (400 unreadable, 488 nothing in common), leaving the media as it was."""
        try:
            offer = sdp.parse(body)
        except sdp.SdpParseError:
            return 400
        result = sdp.negotiate_answer(
            offer,
            self.local_ip,
            rtp.local_port,
            session_id=self.session_id,
            version=self._next_version(),
            ptime=self.ptime_ms,
        )
        if not result.ok:
            return 488
        rtp.apply(result.media)
        self.media = result.media
        return result.answer.to_bytes()

    def reinvite(self, request: SipRequest, rtp: RtpSession | None) -> tuple[int, bytes]:
        """A re-INVITE (hold/resume, a moved address; RFC 3264 §8): (status, our SDP). Without an offer
        we offer (the answer comes in the ACK); a refused re-offer keeps the old media."""
        if rtp is None or rtp.closed:
            return 481, b""
        if not request.body:
            return 200, self.offer(rtp).to_bytes()
        answer = self.answer(request.body, rtp)
        if isinstance(answer, int):
            return answer, b""
        return 200, answer
