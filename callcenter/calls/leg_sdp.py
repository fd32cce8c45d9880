"""One call leg's side of SDP offer/answer (RFC 3264), shared by the caller's leg and agents' legs.

It owns what stays the same across the leg's offers and answers — the origin's session id with a version
that grows with every new description (RFC 4566 §5.2), our address and packet time — and applies what
was agreed to the leg's RTP session.

SRTP (SDES, RFC 4568) follows ``media.srtp``:

* ``off``: RTP/SAVP offers are refused (488), crypto lines in RTP/AVP offers ignored; we offer RTP/AVP.
* ``optional`` (the default): an offer with usable crypto lines gets SRTP, on any signalling
  transport; one without stays plain RTP. We offer RTP/SAVP only where the signalling is TLS
  (``offer_srtp``: an agent registered over TLS), since a plain-RTP phone would refuse RTP/SAVP.
  Keys in SDP over UDP/TCP are readable by anyone who sees the SIP: we still accept them (refusing
  would leave that call in plain RTP, never better) and log ``srtp_keys_in_clear`` once per leg.
* ``required``: offers without usable crypto are refused with 488; we always offer RTP/SAVP.

Each leg has its own key (os.urandom), kept for its whole life so re-offers repeat it (§7.1.4 lets
them; libsrtp's contexts then continue).
"""

from __future__ import annotations

import logging
import secrets
from typing import Literal

from callcenter.media import sdp
from callcenter.media.session import RtpSession
from callcenter.media.srtp import new_key
from callcenter.sip.message import SipRequest

log = logging.getLogger(__name__)

SrtpMode = Literal["off", "optional", "required"]


class LegSdp:
    def __init__(self, ptime_ms: int, local_ip: str = "", *, srtp: SrtpMode = "optional",
                 secure_signalling: bool = False) -> None:
        self.ptime_ms = ptime_ms
        self.local_ip = local_ip
        self.session_id = secrets.randbelow(2**31)
        self.version = 0
        self.media: sdp.NegotiatedMedia | None = None  # the latest agreed media
        self.srtp: SrtpMode = srtp
        self.secure_signalling = secure_signalling  # SIP over TLS: SDES keys are not in the clear
        self.offer_srtp = srtp == "required"  # offer RTP/SAVP (set for agents registered over TLS)
        self._key = new_key() if srtp != "off" else None
        self._warned = False

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def offer(self, rtp: RtpSession) -> sdp.SessionDescription:
        """Our offer: PCMU/PCMA and telephone-event on the leg's RTP port; RTP/SAVP with our crypto
        lines when ``offer_srtp`` or the leg already runs SRTP (a hold re-offer keeps it)."""
        secure = self.offer_srtp or (self.media is not None and self.media.srtp is not None)
        return sdp.make_offer(
            self.local_ip,
            rtp.local_port,
            session_id=self.session_id,
            version=self._next_version(),
            ptime=self.ptime_ms,
            srtp_key=self._key if secure and self.srtp != "off" else None,
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
            srtp_key=self._key,
            require_srtp=self.srtp == "required",
        )
        if not result.ok:
            log.debug("SDP offer refused: %s", result.reason)
            return 488
        rtp.apply(result.media)
        self.media = result.media
        self.note_keys()
        return result.answer.to_bytes()

    def note_keys(self) -> None:
        """Log once per leg that SDES keys crossed signalling anyone on the path could read."""
        if self.media is not None and self.media.srtp is not None and not self.secure_signalling:
            if not self._warned:
                self._warned = True
                log.warning('{"event":"srtp_keys_in_clear","detail":"SDES keys over non-TLS SIP"}')

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
