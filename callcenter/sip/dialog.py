"""Dialogs (RFC 3261 §12): identifiers, CSeq, route set, remote target; building in-dialog requests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from callcenter.sip.message import Headers, SipParseError, SipRequest, SipResponse
from callcenter.sip.transaction import MAGIC_COOKIE, Addr
from callcenter.sip.uri import format_host, parse_name_addr


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our From/To header value without tag
    remote_uri: str
    remote_target: str  # the peer's Contact URI
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int = 0
    peer: Addr | None = None  # where in-dialog requests go: the flow the dialog arrived on
    local_contact: str = ""
    invite_cseq: int = 0  # CSeq of the INVITE that created or last refreshed the session

    @property
    def key(self) -> tuple[str, str, str]:
        return dialog_key(self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uas(cls, request: SipRequest, local_tag: str, peer: Addr, local_contact: str) -> Dialog:
        """The dialog a UAS creates when it answers `request` (§12.1.1)."""
        h = request.headers
        from_ = parse_name_addr(h.get("From") or "")
        contacts = h.get_all("Contact")
        remote_target = parse_name_addr(contacts[0]).uri if contacts else str(request.uri)
        to_value = h.get("To") or ""
        cseq = request.cseq()[0]
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag or "",
            local_uri=to_value,
            remote_uri=_strip_tag(h.get("From") or ""),
            remote_target=remote_target,
            route_set=list(h.get_all("Record-Route")),
            local_cseq=secrets.randbelow(2**20) + 1,
            remote_cseq=cseq,
            peer=peer,
            local_contact=local_contact,
            invite_cseq=cseq,
        )

    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse, peer: Addr) -> Dialog:
        """The dialog a UAC gets from a 2xx/1xx with To tag (§12.1.2)."""
        h = response.headers
        to = parse_name_addr(h.get("To") or "")
        contacts = h.get_all("Contact")
        remote_target = parse_name_addr(contacts[0]).uri if contacts else request.uri
        from_ = parse_name_addr(request.headers.get("From") or "")
        cseq = request.cseq()[0]
        return cls(
            call_id=request.call_id,
            local_tag=from_.tag or "",
            remote_tag=to.tag or "",
            local_uri=_strip_tag(request.headers.get("From") or ""),
            remote_uri=_strip_tag(h.get("To") or ""),
            remote_target=remote_target,
            route_set=list(reversed(h.get_all("Record-Route"))),
            local_cseq=cseq,
            remote_cseq=0,
            peer=peer,
            local_contact=request.headers.get("Contact") or "",
            invite_cseq=cseq,
        )

    def create_request(
        self,
        method: str,
        via_host: str,
        via_port: int,
        transport: str,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipRequest:
        """A new in-dialog request (§12.2.1.1) with a fresh branch; ACK reuses the INVITE's CSeq."""
        if method == "ACK":
            cseq = self.invite_cseq
        else:
            self.local_cseq += 1
            cseq = self.local_cseq
            if method == "INVITE":
                self.invite_cseq = cseq
        headers = Headers()
        headers.add(
            "Via",
            f"SIP/2.0/{transport.upper()} {format_host(via_host)}:{via_port};branch={new_branch()};rport",
        )
        request_uri, routes = self.remote_target, self.route_set
        strict = _strict_route(routes[0]) if routes else None
        if strict is not None:
            # §12.2.1.1: the first hop is a strict router (no ;lr): its URI becomes the Request-URI
            # and the remote target goes last in Route.
            request_uri, routes = strict, [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        # An RFC 2543 peer may have sent no tag (§12.2.1.1: then none goes in).
        headers.add("To", f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE") and self.local_contact:
            headers.add("Contact", self.local_contact)
        for name, value in extra or ():
            headers.add(name, value)
        return SipRequest(method, request_uri, headers, body)

    def accept_remote_cseq(self, cseq: int, method: str) -> bool:
        """§12.2.2: a lower CSeq than the last one is out of order (500); ACK/CANCEL excluded."""
        if method in ("ACK", "CANCEL"):
            return True
        if cseq <= self.remote_cseq and self.remote_cseq:
            return False
        self.remote_cseq = cseq
        return True


def dialog_key(call_id: str, local_tag: str, remote_tag: str) -> tuple[str, str, str]:
    return (call_id, local_tag, remote_tag)


def _strict_route(route: str) -> str | None:
    """The Request-URI for a strict-routing first hop, or None when it routes loosely (has `lr`)."""
    try:
        uri = parse_name_addr(route).parsed_uri()
    except SipParseError:
        return None
    if "lr" in uri.params:
        return None
    uri.params.pop("method", None)  # §19.1.1: not allowed in a Request-URI, nor are headers
    uri.headers = ""
    return str(uri)


def _strip_tag(value: str) -> str:
    addr = parse_name_addr(value)
    addr.params.pop("tag", None)
    return str(addr)
