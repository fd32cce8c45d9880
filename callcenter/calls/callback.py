"""Callbacks that keep the caller's place.

A queued caller presses the queue's callback key (or the queue overflows to ``callback``): they confirm
their number (caller ID, or digits typed), hear that they keep their place, and the server hangs up.
Their router entry stays in line with its arrival time and priority (``Router.to_callback``) and a row
in ``callback_request`` remembers it across restarts.

When the entry's turn comes the router offers it like any caller. :class:`CallbackRunner` rings the
agent first; once they answer they hear who is being called back, then the customer is dialled through
the SIP trunk (calls/outbound.py). Answered: bridged and recorded like a queue call, a call record of
its own (disposition ``callback``) and the outcome on the original call's record. No answer, busy or a
failed trunk: the agent is freed, and the entry rests (keeping its place) for
``routing.callback_retry_delay_s`` and is tried again, ``routing.callback_retries`` times, then it is
given up as ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sqlalchemy import JSON
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from callcenter.calls.agent_leg import AgentRing, CallerInfo, RingTarget, close_leg
from callcenter.calls.outbound import DialResult, dial
from callcenter.core.logging import log_event
from callcenter.ivr.control import CallerHangup, DigitSpec, PromptItem
from callcenter.media.bridge import Bridge
from callcenter.media.playback import PromptError, load_prompt
from callcenter.media.recorder import LEFT, RIGHT, CallRecorder, RecordingError
from callcenter.routing.router import Offer, OfferGone
from callcenter.speech.cache import PromptSpec
from callcenter.speech.tts import voice_for
from callcenter.store.db import UTCDateTime, utcnow

if TYPE_CHECKING:
    from callcenter.calls.acd import Acd
    from callcenter.calls.control import LiveCallControl

__all__ = ["CallbackBook", "CallbackRequest", "CallbackRunner", "ask_callback_number", "spoken_digits"]

log = logging.getLogger("callcenter.callback")

PENDING, DONE, FAILED, CANCELLED = "pending", "done", "failed", "cancelled"


@runtime_checkable
class CallRecords(Protocol):
    """The parts of the CallRecordWriter a callback uses (its own record, the original's outcome)."""

    def call_started(self, sip_call_id: str, from_uri: str, to_uri: str, started_at: datetime) -> None: ...

    def call_answered(self, sip_call_id: str, at: datetime) -> None: ...

    def call_ended(self, sip_call_id: str, at: datetime, hangup_by: Any, disposition: str) -> None: ...

    def call_extra(self, sip_call_id: str, fields: dict[str, Any]) -> None: ...


def _records(acd: Acd) -> CallRecords | None:
    writer = acd.writer
    return writer if isinstance(writer, CallRecords) else None


class CallbackRequest(SQLModel, table=True):
    """A callback left by a queued caller; ``pending`` rows are put back in line at start-up."""

    __tablename__ = "callback_request"

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(unique=True, index=True, max_length=255, description="the caller's SIP Call-ID")
    queue: str = Field(max_length=128)
    number: str = Field(max_length=64, description="the number to call back")
    priority: int = 0
    skills: dict[str, int] = Field(default_factory=dict, sa_type=JSON, description="the flow's extra skills")
    language: str | None = Field(default=None, max_length=35)
    enqueued_at: datetime = Field(sa_type=UTCDateTime, description="when the caller joined the queue")
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    attempts: int = 0
    status: str = Field(default=PENDING, max_length=16, index=True, description="pending, done, failed")
    outcome: str | None = Field(default=None, max_length=32, description="answered, no_answer, busy, failed")
    agent: str | None = Field(default=None, max_length=64)
    last_call_id: str | None = Field(default=None, max_length=255, description="record of the last try")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CallbackBook:
    """The ``callback_request`` rows (synchronous: call through ``asyncio.to_thread``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        CallbackRequest.metadata.create_all(engine, tables=[CallbackRequest.__table__])  # type: ignore[attr-defined]

    def add(self, row: CallbackRequest) -> None:
        with Session(self.engine) as s:
            existing = s.exec(select(CallbackRequest).where(CallbackRequest.call_id == row.call_id)).first()
            if existing is not None:
                s.delete(existing)
                s.flush()
            s.add(CallbackRequest.model_validate(row.model_dump()))  # the caller keeps its own object
            s.commit()

    def pending(self) -> list[CallbackRequest]:
        with Session(self.engine, expire_on_commit=False) as s:
            rows = s.exec(select(CallbackRequest).where(CallbackRequest.status == PENDING)).all()
            return list(rows)

    def get(self, call_id: str) -> CallbackRequest | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.exec(select(CallbackRequest).where(CallbackRequest.call_id == call_id)).first()

    def update(self, call_id: str, **fields: Any) -> None:
        with Session(self.engine) as s:
            row = s.exec(select(CallbackRequest).where(CallbackRequest.call_id == call_id)).first()
            if row is None:
                return
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            s.add(row)
            s.commit()


def spoken_digits(number: str) -> str:
    """``5551234`` → ``5 5 5 1 2 3 4`` (TTS reads digits one by one, not as a big number)."""
    return " ".join(ch if ch != "+" else "plus" for ch in number)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"\+?[0-9]{3,20}", text or ""))


async def ask_callback_number(
    control: LiveCallControl, *, caller_id: str, language: str, allow_stay: bool
) -> str | None:
    """Ask the caller which number to call back: their caller ID (press 1) or digits typed (ending
    with #). None when they would rather stay in line (``*``), or give nothing usable."""
    zh = language.lower().startswith("zh")

    def say(en: str, cn: str) -> PromptItem:
        return PromptItem(cn if zh else en, None, language)

    stay = say(" Press star to keep waiting.", "按星号键继续等待。") if allow_stay else None
    if _is_number(caller_id):
        prompts = [
            say(f"We can call you back at {spoken_digits(caller_id)}, and you keep your place in line. "
                "Press 1 to confirm, or 2 to give another number.",
                f"我们可以回拨{spoken_digits(caller_id)}，您的排队位置保持不变。确认请按1，其他号码请按2。"),
        ]
        if stay is not None:
            prompts.append(stay)
        choice = await control.collect_digits(DigitSpec(max_digits=1), prompts=prompts, timeout_s=8.0)
        if choice.digits == "1":
            return caller_id
        if choice.digits != "2":
            return None
    prompts = [say("Please enter the number to call you back on, then press the hash key.",
                   "请输入回拨号码，以井号键结束。")]
    if stay is not None:
        prompts.append(stay)
    typed = await control.collect_digits(
        DigitSpec(max_digits=20, min_digits=3, terminator="#", inter_digit_timeout_s=5.0),
        prompts=prompts,
        timeout_s=10.0,
    )
    number = typed.digits.replace("*", "")
    return number if _is_number(number) and "*" not in typed.digits else None


async def confirm_and_hang_up(control: LiveCallControl, number: str, language: str) -> None:
    """Tell the caller what happens next and end the call from our side (raises CallerHangup)."""
    zh = language.lower().startswith("zh")
    text = (
        f"谢谢。我们会回拨{spoken_digits(number)}，您的排队位置保持不变。再见。"
        if zh
        else f"Thank you. We will call you back at {spoken_digits(number)} when it is your turn. Goodbye."
    )
    with contextlib.suppress(CallerHangup):
        await control.say(text, language=language)
    await control.hangup("callback")
    raise CallerHangup("callback requested")


class CallbackRunner:
    """Runs callback offers for an :class:`Acd` (one task per offer, in the Acd's task set)."""

    def __init__(self, acd: Acd) -> None:
        self.acd = acd
        self.book: CallbackBook | None = None
        self.numbers: dict[str, str] = {}  # call id → number (in memory; the book persists it)
        self.attempts: dict[str, int] = {}
        self.requested: dict[str, CallbackRequest] = {}
        self._dropped: deque[str] = deque(maxlen=1000)  # entries made to leave (each logged once)

    # -- set-up ---------------------------------------------------------------------------------------

    async def restore(self, engine: Engine | None) -> int:
        """Open the book and put every pending callback back in line, at its original arrival time
        (relative to now, on the monotonic clock)."""
        if engine is None:
            return 0
        self.book = await asyncio.to_thread(CallbackBook, engine)
        rows = await asyncio.to_thread(self.book.pending)
        acd, router = self.acd, self.acd.router
        now, wall = acd.clock(), datetime.now(UTC)
        restored = 0
        for row in sorted(rows, key=lambda r: r.enqueued_at):
            if row.queue not in router.queues:
                await asyncio.to_thread(self.book.update, row.call_id, status=FAILED, outcome="no_such_queue")
                continue
            since = now - max(0.0, (wall - row.enqueued_at).total_seconds())
            router.enqueue(row.call_id, row.queue, now, priority=row.priority, skills=row.skills or None,
                           language=row.language, since=since, callback=True)
            self._remember(row)
            restored += 1
        if restored:
            log_event(log, "callbacks_restored", count=restored)
            acd._kick()
        return restored

    async def number(self, call_id: str) -> str | None:
        """The number to call back: remembered here, or (a cluster: the callback was left on a node
        that died, and the leader handed its entry to this one) a pending row of the shared book."""
        return (await self._lookup(call_id))[0]

    async def _lookup(self, call_id: str) -> tuple[str | None, str | None]:
        """The number, or None and why not for good: ``missing`` / the row's status when no pending
        request has this id (the entry must leave the line), None when the database is away."""
        number = self.numbers.get(call_id)
        if number is not None:
            return number, None
        if self.book is None:
            return None, "missing"
        try:
            row = await asyncio.to_thread(self.book.get, call_id)
        except Exception as exc:  # noqa: BLE001 - the database is away: the entry is tried again later
            log_event(log, "callback_not_read", level=logging.ERROR, call_id=call_id, error=repr(exc))
            return None, None
        if row is None or row.status != PENDING:
            return None, "missing" if row is None else row.status
        self._remember(row)
        return row.number, None

    def _remember(self, row: CallbackRequest) -> None:
        self.numbers[row.call_id] = row.number
        self.attempts[row.call_id] = row.attempts
        self.requested[row.call_id] = row

    async def register(
        self, call_id: str, queue: str, number: str, *, priority: int, skills: dict[str, int],
        language: str | None, waited_s: float, control: LiveCallControl,
    ) -> None:
        """A caller's callback: persisted, then the original record says so."""
        row = CallbackRequest(
            call_id=call_id, queue=queue, number=number, priority=priority, skills=dict(skills),
            language=language, enqueued_at=utcnow() - timedelta(seconds=max(0.0, waited_s)),
        )
        self._remember(row)
        if self.book is not None:
            try:
                await asyncio.to_thread(self.book.add, row)
            except Exception as exc:  # noqa: BLE001 - the callback still runs while the server does
                log_event(log, "callback_not_saved", level=logging.ERROR, call_id=call_id, error=repr(exc))
        self._record_original(call_id, status=PENDING, outcome=None)
        log_event(log, "callback_requested", call_id=call_id, queue=queue, number=number,
                  position=self.acd.router.position(call_id))

    # -- one offer --------------------------------------------------------------------------------------

    async def run(self, offer: Offer) -> None:
        acd, router = self.acd, self.acd.router
        call_id = offer.call_id
        number, gone = await self._lookup(call_id)
        if number is None and gone is not None:
            # No pending request any more (a cluster: the node that took it died after finishing or
            # dropping it, or the row was deleted): the entry leaves the line (a ``leave`` command to
            # the leader), which frees the offer's agents, rather than being offered again and again.
            router.leave(call_id, acd.clock(), reason="callback_failed")
            if call_id not in self._dropped:
                self._dropped.append(call_id)
                log_event(log, "callback_dropped", level=logging.WARNING, call_id=call_id, queue=offer.queue,
                          request=gone)
            acd._kick()
            return
        if number is None:  # the database is away: give the agents back, the entry is tried again
            for name in offer.agents:
                router.offer_failed(call_id, name, acd.clock(), missed=False)
            acd._kick()
            return
        contacts = {
            name: [RingTarget.from_binding(b) for b in acd.registration.lookup(name)] for name in offer.agents
        }
        info = CallerInfo(call_id, number, "Callback", offer.queue)
        ring = AgentRing(acd.endpoint, acd.media, info, {n: c for n, c in contacts.items() if c},
                         ptime_ms=acd.settings.media.ptime_ms, timeout_s=offer.timeout_s,
                         srtp=acd.settings.media.srtp)
        log_event(log, "agent_offered", call_id=call_id, queue=offer.queue, agents=list(offer.agents),
                  callback=True)
        result = await ring.ring()
        now = acd.clock()
        if result.agent is None or result.leg is None or result.rtp is None:
            for name in offer.agents:
                how = result.outcomes.get(name, "unreachable")
                missed = how in ("rejected", "no_answer", "unreachable")
                router.offer_failed(call_id, name, now, missed=missed)
                log_event(log, "agent_offer_failed", call_id=call_id, agent=name, outcome=how, callback=True)
            acd._kick()
            return
        agent, agent_leg, agent_rtp = result.agent, result.leg, result.rtp
        try:
            router.callback_connecting(call_id, agent, now)
        except OfferGone:
            await close_leg(agent_leg, agent_rtp, "offer withdrawn")
            acd._kick()
            return
        acd._kick()
        log_event(log, "agent_answered", call_id=call_id, agent=agent, callback=True)
        attempt = self.attempts.get(call_id, 0) + 1
        self.attempts[call_id] = attempt
        await self._save(call_id, attempts=attempt, agent=agent, last_call_id=agent_leg.call_id)
        started = datetime.now(UTC)
        writer = _records(acd)
        record_id = agent_leg.call_id
        if writer is not None:
            writer.call_started(record_id, f"<sip:{agent}@callcenter>", f"<tel:{number}>", started)
        customer: DialResult | None = None
        outcome: str = "failed"
        hangup_by, talk_s, recording = "server", 0.0, None
        try:
            await self._announce(agent_rtp, agent_leg, number, offer.queue)
            customer = await self._dial(call_id, number, agent_leg)
            if customer is None:
                outcome, hangup_by = "agent_hung_up", "agent"
            elif customer.outcome != "answered":
                outcome = customer.outcome
            else:
                outcome = "answered"
                assert customer.leg is not None and customer.rtp is not None
                router.callback_answered(call_id, acd.clock())
                acd._kick()
                if writer is not None:
                    writer.call_answered(record_id, datetime.now(UTC))
                answered_at = acd.clock()
                hangup_by, recording = await self._talk(record_id, agent_rtp, agent_leg, customer)
                talk_s = acd.clock() - answered_at
        except Exception as exc:  # noqa: BLE001 - one broken callback must not stop the others
            log_event(log, "callback_error", level=logging.ERROR, call_id=call_id, error=repr(exc))
        finally:
            if customer is not None:
                await close_leg(customer.leg, customer.rtp, "call ended")
            await close_leg(agent_leg, agent_rtp, "call ended")
            now = acd.clock()
            if outcome == "answered":
                router.call_ended(agent, now)
                await self._finish(call_id, DONE, outcome)
            else:
                retries = acd.settings.routing.callback_retries
                last = attempt > retries
                delay = acd.settings.routing.callback_retry_delay_s
                router.callback_failed(call_id, now, retry_at=None if last else now + delay)
                if last:
                    await self._finish(call_id, FAILED, outcome)
                else:
                    await self._save(call_id, outcome=outcome)
                    self._record_original(call_id, status=PENDING, outcome=outcome)
                log_event(log, "callback_not_answered", call_id=call_id, outcome=outcome, attempt=attempt,
                          retry_in_s=None if last else delay)
            acd._kick()
            if writer is not None:
                extra: dict[str, Any] = {
                    "callback_of": call_id,
                    "callback_outcome": outcome,
                    "callback_attempt": attempt,
                    "queue": offer.queue,
                    "agent": agent,
                    "talk_s": round(talk_s, 2),
                }
                row = self.requested.get(call_id)
                if row is not None and outcome == "answered":
                    extra["wait_s"] = round((started - row.enqueued_at).total_seconds(), 2)
                if recording is not None:
                    extra["recording"] = recording
                writer.call_extra(record_id, extra)
                by = "agent" if hangup_by == "agent" else ("caller" if hangup_by == "customer" else "server")
                writer.call_ended(record_id, datetime.now(UTC), by, "callback")
            log_event(log, "callback_ended", call_id=call_id, agent=agent, outcome=outcome,
                      record=record_id, talk_s=round(talk_s, 2))

    async def _announce(self, rtp: Any, leg: Any, number: str, queue: str) -> None:
        """The agent hears who is being called back (TTS when the IVR's prompt cache is there)."""
        prompts = self.acd.prompts
        if prompts is None:
            return
        text = f"Callback from the {queue} queue to {spoken_digits(number)}. Connecting you now."
        try:
            cached = await prompts.get(PromptSpec(text, voice_for("en")))
            audio = await load_prompt(cached.path, rtp.codec, ptime_ms=self.acd.settings.media.ptime_ms)
        except (PromptError, OSError, Exception) as exc:  # noqa: BLE001 - the call goes on without it
            log_event(log, "callback_announcement_failed", level=logging.WARNING, error=repr(exc))
            return
        playing = rtp.play(audio)
        await asyncio.wait([playing, leg.ended], timeout=audio.duration + 2.0,
                           return_when=asyncio.FIRST_COMPLETED)

    async def _dial(self, call_id: str, number: str, agent_leg: Any) -> DialResult | None:
        """Dial the customer; None when the agent hung up meanwhile (the dial is cancelled)."""
        acd = self.acd
        if agent_leg.ended.done():
            return None
        task = asyncio.ensure_future(
            dial(acd.endpoint, acd.media, acd.settings, number, for_call=call_id)
        )
        await asyncio.wait([task, agent_leg.ended], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _talk(
        self, record_id: str, agent_rtp: Any, agent_leg: Any, customer: DialResult
    ) -> tuple[str, str | None]:
        """Bridge agent and customer until one hangs up; recorded (customer left, agent right) with
        ``calls.record``. Returns who hung up and the recording's path."""
        acd = self.acd
        assert customer.leg is not None and customer.rtp is not None
        recorder: CallRecorder | None = None
        path: str | None = None
        if acd.settings.calls.record:
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in record_id)[:120]
            target = acd.settings.data_dir / "recordings" / day / f"{safe}.wav"
            try:
                recorder = CallRecorder(target)
                customer.rtp.add_audio_tap(recorder.tap(LEFT))
                agent_rtp.add_audio_tap(recorder.tap(RIGHT))
                path = str(target)
            except (RecordingError, OSError) as exc:
                log_event(log, "recording_failed", level=logging.ERROR, call_id=record_id, error=str(exc))
        agent_rtp.stop_playback()
        customer.rtp.stop_playback()
        try:
            with Bridge(customer.rtp, agent_rtp):
                agent_gone = asyncio.ensure_future(acd._agent_gone(agent_leg, agent_rtp))
                customer_gone = asyncio.ensure_future(acd._agent_gone(customer.leg, customer.rtp))
                try:
                    done, _ = await asyncio.wait(
                        [agent_gone, customer_gone], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    agent_gone.cancel()
                    customer_gone.cancel()
            return ("agent" if agent_gone in done else "customer"), path
        finally:
            if recorder is not None:
                recorder.close()

    # -- bookkeeping ----------------------------------------------------------------------------------

    async def _save(self, call_id: str, **fields: Any) -> None:
        row = self.requested.get(call_id)
        if row is not None:
            for key, value in fields.items():
                setattr(row, key, value)
        if self.book is None:
            return
        try:
            await asyncio.to_thread(self.book.update, call_id, **fields)
        except Exception as exc:  # noqa: BLE001
            log_event(log, "callback_not_saved", level=logging.ERROR, call_id=call_id, error=repr(exc))

    async def _finish(self, call_id: str, status: str, outcome: str) -> None:
        await self._save(call_id, status=status, outcome=outcome)
        self._record_original(call_id, status=status, outcome=outcome)
        self.numbers.pop(call_id, None)
        self.attempts.pop(call_id, None)
        self.requested.pop(call_id, None)

    def _record_original(self, call_id: str, *, status: str, outcome: str | None) -> None:
        writer = _records(self.acd)
        row = self.requested.get(call_id)
        if writer is None or row is None:
            return
        writer.call_extra(call_id, {"callback": {
            "number": row.number,
            "status": status,
            "outcome": outcome,
            "attempts": row.attempts,
            "agent": row.agent,
            "last_call_id": row.last_call_id,
        }})

    def forget(self, call_ids: Sequence[str]) -> None:
        for call_id in call_ids:
            self.numbers.pop(call_id, None)
