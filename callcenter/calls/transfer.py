"""Hold and transfers of one bridged call (caller ↔ agent).

:class:`TalkState` is the pure part: who the caller hears (the agent, or hold music), hold time and
count, and the transfers tried with their outcome. It takes ``now`` and does no I/O, so every "what if
it ends now" edge is a unit test. :class:`LiveTalk` drives it on the event loop for the ACD: bridges,
hold music, the consulted target's leg, and the commands from the agent's phone (re-INVITE hold,
REFER) and the API (hold, resume, transfer, complete, cancel).

Decisions:

- The caller is on hold while the agent's phone holds (re-INVITE with a=sendonly/inactive, or the
  legacy c=0.0.0.0 of RFC 3264 §8.4), while the API holds, and for the whole consultation of an
  attended transfer. Each stretch of hold music counts once in ``holds`` and adds to ``hold_s``.
- Attended transfer (consult): the caller hears hold music, the target rings, its answer is bridged
  with the transferring agent. ``complete`` bridges caller ↔ target and releases the first agent;
  ``cancel``, the target declining or hanging up brings the caller back to the first agent. The first
  agent hanging up while the target is already on the line completes the transfer (what desk phones
  do); hanging up while it still rings cancels the consultation and ends the agent's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from callcenter.core.errors import CallcenterError

if TYPE_CHECKING:
    from callcenter.sip.dialog import Dialog

TransferKind = Literal["blind", "attended"]
Via = Literal["phone", "api"]


class TransferError(CallcenterError):
    """The call cannot do that now (e.g. complete without a consultation): HTTP 409."""


class Phase(StrEnum):
    TALKING = "talking"  # caller ↔ agent (possibly on hold)
    CONSULT_RINGING = "consult_ringing"  # caller on hold, the transfer target rings
    CONSULTING = "consulting"  # caller on hold, agent ↔ target bridged
    ENDED = "ended"


@dataclass
class TransferRecord:
    """One transfer on the call record: ``outcome`` is transferred (blind: handed on), completed,
    cancelled, no_answer, busy, failed or target_hung_up."""

    kind: TransferKind
    by: str
    to: str
    via: Via
    at: float
    outcome: str = "pending"
    agent: str | None = None  # who took an attended transfer

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "from": self.by, "to": self.to, "via": self.via,
                               "outcome": self.outcome}
        if self.agent is not None:
            out["agent"] = self.agent
        return out


@dataclass
class HoldLog:
    """Hold time of a whole call (across agents and transfers)."""

    holds: int = 0
    hold_s: float = 0.0
    transfers: list[TransferRecord] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"holds": self.holds, "hold_s": round(self.hold_s, 2),
                "transfers": [t.as_json() for t in self.transfers]}


class TalkState:
    """Who the caller hears during one bridged call; hold accounting; transfers. Pure: takes ``now``."""

    def __init__(self, agent: str, now: float, log: HoldLog | None = None) -> None:
        self.agent = agent
        self.phase = Phase.TALKING
        self.phone_held = False  # the agent's phone put its leg on hold
        self.api_held = False  # POST /api/calls/{id}/hold
        self.consult: TransferRecord | None = None
        self.consult_target: Any = None  # what LiveTalk rings (a TransferTarget)
        self.log = log if log is not None else HoldLog()
        self._held_since: float | None = None
        self._sync(now)

    # -- what the caller hears ----------------------------------------------------------------------

    @property
    def caller_on_hold(self) -> bool:
        if self.phase is Phase.ENDED:
            return False
        return self.phone_held or self.api_held or self.phase is not Phase.TALKING

    @property
    def consult_bridged(self) -> bool:
        """The transferring agent and the target talk to each other."""
        return self.phase is Phase.CONSULTING

    def held_by(self) -> list[str]:
        return [who for who, on in (("phone", self.phone_held), ("api", self.api_held),
                                    ("transfer", self.phase in (Phase.CONSULT_RINGING, Phase.CONSULTING)))
                if on]

    def hold_s(self, now: float) -> float:
        extra = now - self._held_since if self._held_since is not None else 0.0
        return self.log.hold_s + extra

    def _sync(self, now: float) -> None:
        on = self.caller_on_hold
        if on and self._held_since is None:
            self._held_since = now
            self.log.holds += 1
        elif not on and self._held_since is not None:
            self.log.hold_s += max(0.0, now - self._held_since)
            self._held_since = None

    def _require(self, *phases: Phase, doing: str) -> None:
        if self.phase not in phases:
            raise TransferError(f"cannot {doing} while {self.phase.value.replace('_', ' ')}")

    # -- hold -----------------------------------------------------------------------------------------

    def phone_hold(self, held: bool, now: float) -> bool:
        """The agent's phone held (True) or resumed (False) its leg; whether anything changed."""
        if self.phase is Phase.ENDED or held == self.phone_held:
            return False
        self.phone_held = held
        self._sync(now)
        return True

    def hold(self, now: float) -> None:
        self._require(Phase.TALKING, doing="hold")
        self.api_held = True
        self._sync(now)

    def resume(self, now: float) -> None:
        """Ends the API's hold (the phone's own hold stays until the phone resumes)."""
        self._require(Phase.TALKING, doing="resume")
        if not self.api_held:
            raise TransferError("the call is not on hold" if not self.phone_held
                                else "the agent's phone holds the call: resume it there")
        self.api_held = False
        self._sync(now)

    # -- transfers ------------------------------------------------------------------------------------

    def blind(self, to: str, via: Via, now: float) -> TransferRecord:
        """The caller is handed on (REFER without Replaces, or the API's blind mode)."""
        self._require(Phase.TALKING, doing="transfer")
        record = TransferRecord("blind", self.agent, to, via, now, outcome="transferred")
        self.log.transfers.append(record)
        self.end(now)
        return record

    def begin_consult(self, to: str, target: Any, via: Via, now: float) -> TransferRecord:
        self._require(Phase.TALKING, doing="transfer")
        record = TransferRecord("attended", self.agent, to, via, now)
        self.log.transfers.append(record)
        self.consult, self.consult_target = record, target
        self.phase = Phase.CONSULT_RINGING
        self._sync(now)
        return record

    def consult_answered(self, agent: str, now: float) -> None:
        self._require(Phase.CONSULT_RINGING, doing="connect the transfer target")
        assert self.consult is not None
        self.consult.agent = agent
        self.phase = Phase.CONSULTING
        self._sync(now)

    def consult_failed(self, outcome: str, now: float) -> None:
        """The target declined, did not answer or hung up: the caller is back with the agent."""
        self._require(Phase.CONSULT_RINGING, Phase.CONSULTING, doing="end the consultation")
        self._back(outcome, now)

    def cancel(self, now: float) -> None:
        self._require(Phase.CONSULT_RINGING, Phase.CONSULTING, doing="cancel a transfer")
        self._back("cancelled", now)

    def complete(self, now: float) -> str:
        """Caller ↔ target from now on; the target becomes the call's agent. Returns the first agent."""
        self._require(Phase.CONSULTING, doing="complete a transfer")
        assert self.consult is not None and self.consult.agent is not None
        first = self.agent
        self.consult.outcome = "completed"
        self.agent = self.consult.agent
        self.consult = self.consult_target = None
        self.phase = Phase.TALKING
        self.phone_held = self.api_held = False  # the new agent's phone holds nothing yet
        self._sync(now)
        return first

    def _back(self, outcome: str, now: float) -> None:
        assert self.consult is not None
        self.consult.outcome = outcome
        self.consult = self.consult_target = None
        self.phase = Phase.TALKING
        self._sync(now)

    def end(self, now: float) -> None:
        """The bridged call is over (either side hung up, or a blind transfer): close the hold time;
        a consultation still open ends as cancelled."""
        if self.consult is not None and self.consult.outcome == "pending":
            self.consult.outcome = "cancelled"
        self.phase = Phase.ENDED
        self._sync(now)

    def as_json(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "agent": self.agent,
            "state": self.phase.value,
            "on_hold": self.caller_on_hold,
            "held_by": self.held_by(),
            "holds": self.log.holds,
            "hold_s": round(self.hold_s(now), 2),
        }
        if self.consult is not None:
            out["transfer"] = self.consult.as_json()
        return out


# -- Replaces (RFC 3891) in a REFER's Refer-To (RFC 5589 §7) -----------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # RFC 3261 §25.1 token
# callid = word [ "@" word ] (RFC 3261 §25.1)
_CALLID = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?")


@dataclass(frozen=True)
class Replaces:
    """Which dialog the transferor wants replaced. The tags are named from the point of view of the
    dialog's target (RFC 3891 §3): ``to_tag`` is the target's local tag, ``from_tag`` the remote one."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False


def has_replaces(refer_to: str) -> bool:
    """Whether the Refer-To URI carries a Replaces header (``?Replaces=`` / ``&Replaces=``)."""
    _, _, headers = refer_to.partition("?")
    return any(h.split("=", 1)[0].strip().lower() == "replaces" for h in headers.rstrip(">").split("&"))


def parse_replaces(refer_to: str) -> Replaces:
    """The Replaces header escaped in a Refer-To URI (RFC 3891 §6.1:
    ``<sip:bob@host?Replaces=12345%40host%3Bto-tag%3D12%3Bfrom-tag%3D34>``). Raises ValueError when it
    is malformed: RFC 3891 §3 wants exactly one to-tag and one from-tag beside the Call-ID."""
    from callcenter.sip.message import SipParseError
    from callcenter.sip.uri import parse_name_addr

    try:
        uri = parse_name_addr(refer_to).parsed_uri()
    except (ValueError, SipParseError) as exc:
        raise ValueError(f"bad Refer-To: {exc}") from None
    values = [
        unquote(value)
        for name, _, value in (h.partition("=") for h in uri.headers.split("&") if h)
        if name.strip().lower() == "replaces"
    ]
    if len(values) != 1:
        raise ValueError("expected exactly one Replaces in the Refer-To URI")
    call_id, *params = (p.strip() for p in values[0].split(";"))
    if not _CALLID.fullmatch(call_id):
        raise ValueError(f"Replaces: bad Call-ID {call_id!r}")
    tags: dict[str, list[str]] = {"to-tag": [], "from-tag": []}
    early = False
    for param in params:
        name, eq, value = param.partition("=")
        name = name.strip().lower()
        if name in tags:
            if not eq or not _TOKEN.fullmatch(value.strip()):
                raise ValueError(f"Replaces: bad {name}")
            tags[name].append(value.strip())
        elif name == "early-only" and not eq:
            early = True
        elif not _TOKEN.fullmatch(name):
            raise ValueError(f"Replaces: bad parameter {param!r}")
    if len(tags["to-tag"]) != 1 or len(tags["from-tag"]) != 1:
        raise ValueError("Replaces: exactly one to-tag and one from-tag are required (RFC 3891 §3)")
    return Replaces(call_id, tags["to-tag"][0], tags["from-tag"][0], early)


def names_dialog(dialog: Dialog | None, replaces: Replaces) -> bool:
    """Whether ``replaces`` names ``dialog`` (one of ours): to-tag our local tag, from-tag the peer's
    (RFC 3891 §3). The reverse is accepted too: some phones swap them, and a Call-ID with both tags
    still names exactly one dialog."""
    if dialog is None or dialog.call_id != replaces.call_id:
        return False
    tags = (replaces.to_tag, replaces.from_tag)
    return tags in ((dialog.local_tag, dialog.remote_tag), (dialog.remote_tag, dialog.local_tag))
