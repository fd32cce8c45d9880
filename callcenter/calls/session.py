"""One CallSession per incoming call: SDP, RTP, what the caller hears, the call record.

Every task of a call lives in the call's TaskGroup; the RTP ports are released as soon as the call
ends, in ``finally``. When the dialled number maps to an IVR flow (``ivr.numbers`` /
``ivr.default_flow``) a FlowRunner drives the call through LiveCallControl, in the call's TaskGroup;
other calls hear the demo tone and the server hangs up after ``calls.demo_hangup_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from callcenter.calls.control import IvrRuntime, LiveCallControl, Utterance
from callcenter.calls.leg_sdp import LegSdp
from callcenter.core.config import Settings
from callcenter.core.logging import log_event
from callcenter.ivr.engine import CallInfo, FlowResult, FlowRunner
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import Services
from callcenter.media import dtmf, sdp, tones
from callcenter.media.engine import MediaEngine
from callcenter.media.pacer import encode_frames, looping
from callcenter.media.ports import RtpPortsExhausted
from callcenter.media.recorder import LEFT, RIGHT, CallRecorder, RecordingError
from callcenter.media.session import RtpSession
from callcenter.sip.endpoint import SipEndpoint
from callcenter.sip.invite import END_BYE, END_CANCEL, END_NO_ACK, IncomingCall
from callcenter.sip.message import SipParseError, SipRequest
from callcenter.sip.uri import parse_name_addr, parse_uri
from callcenter.store import CallRecordWriter
from callcenter.tickets.csat import survey_answer
from callcenter.tickets.service import HandledCall, Turn

log = logging.getLogger("callcenter.calls")

# Dispositions on the call record.
ANSWERED = "answered"
ABANDONED = "abandoned"  # the caller gave up before the answer
REJECTED = "rejected"  # we refused the call (no common codec, no RTP port, shutting down)
FAILED = "failed"  # something broke before the answer


def monitor_view(acd: Any, call_id: str) -> dict[str, Any] | None:
    """``{mode, supervisor, state}`` of the supervisor monitoring ``call_id`` (None: nobody); ``acd``
    is the Acd (None: no routing), its bridged call's ``monitor`` a calls/monitor.py Monitor."""
    if acd is None:
        return None
    try:
        talk = acd.live_talk(call_id)
    except KeyError:  # not bridged to an agent now
        return None
    monitor = getattr(talk, "monitor", None)
    if monitor is None:
        return None
    return {"mode": monitor.mode, "supervisor": monitor.supervisor, "state": monitor.state}


@dataclass
class CallDeps:
    settings: Settings
    media: MediaEngine
    writer: CallRecordWriter
    endpoint: SipEndpoint
    ivr: IvrRuntime | None = None
    # Told about every call that ran a flow once it ended (tickets per policy); must not raise.
    after_call: Callable[[HandledCall], Awaitable[object]] | None = None


@functools.lru_cache(maxsize=16)
def _tone_frames(hz: int, codec: str) -> tuple[bytes, ...]:
    """One second of tone, encoded once per codec and shared by every call."""
    return tuple(encode_frames(tones.sine(hz, 1.0), codec))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CallSession:
    def __init__(self, call: IncomingCall, deps: CallDeps) -> None:
        self.call = call
        self.deps = deps
        self.rtp: RtpSession | None = None
        self.end_reason: str | None = None
        self._hangup_requested = asyncio.Event()
        self.sdp = LegSdp(deps.settings.media.ptime_ms, srtp=deps.settings.media.srtp,
                          secure_signalling=call.source.transport == "tls")
        self._expect_rtp = True  # false while the peer holds the call with inactive/recvonly
        self.digits: list[str] = []  # every DTMF digit the caller sent, in order
        self.recorder: CallRecorder | None = None
        self.recording: str | None = None  # the WAV path, kept after the recorder is closed
        self.started_at = _utcnow()
        self.control: LiveCallControl | None = None
        self._tg: asyncio.TaskGroup | None = None  # the call's TaskGroup while it is answered
        self.runner: FlowRunner | None = None
        self.ivr_result: FlowResult | None = None
        self.transcript: list[Utterance] = []  # what the caller said, recognised (IVR speech input)

    @property
    def call_id(self) -> str:
        return self.call.call_id

    def request_hangup(self, reason: str) -> None:
        """Ask the call to end from our side (shutdown, media timeout, demo timer)."""
        if self.end_reason is None:
            self.end_reason = reason
        self._hangup_requested.set()
        if self.control is not None:
            self.control.caller_gone()

    async def run(self) -> None:
        call, writer = self.call, self.deps.writer
        self.started_at = _utcnow()
        writer.call_started(self.call_id, call.from_header, call.to_header, self.started_at)
        log_event(
            log,
            "call_offered",
            call_id=self.call_id,
            level=logging.DEBUG,
            source=f"{call.source.host}:{call.source.port}",
        )
        disposition = FAILED
        try:
            disposition = await self._answer_and_serve()
        except SipParseError as exc:  # a header the call needs (From, Contact, ...) cannot be read
            log_event(log, "call_bad_request", call_id=self.call_id, level=logging.WARNING, error=str(exc))
            if call.state == "early":
                call.reject(400, _reason_phrase(str(exc)))
            elif call.state == "confirmed":
                await call.hangup("bad request")
        except Exception as exc:  # noqa: BLE001 - a bug in one call must not take the server down
            log_event(log, "call_error", call_id=self.call_id, level=logging.ERROR, error=repr(exc))
            if call.state == "early":
                call.reject(500)
            elif call.state == "confirmed":
                await call.hangup("server error")
        finally:
            self._release_media()
            ran = self.runner.flow if self.runner is not None else None  # _record_ivr forgets the runner
            self._record_ivr()
            disposition = self._record_queue(disposition)
            if self.digits:
                writer.call_extra(self.call_id, {"dtmf": "".join(self.digits)})
            if self.transcript:
                transcript = sorted(self.transcript, key=lambda u: u.start)  # caller's land after recognition
                writer.call_extra(self.call_id, {"transcript": [u.as_json() for u in transcript]})
            if call.state != "terminated":
                call.reject(500)
            # Break the call ↔ session cycle (the hooks are bound methods): the INVITE transaction keeps
            # the call for up to 32 s after the end, and without this the whole session (its media,
            # flow, transcript) would wait for a full garbage collection to be freed.
            call.on_reinvite = call.on_info = call.on_refer = None
            ended = call.ended.result() if call.ended.done() else None
            reason = self.end_reason or ended or "unknown"
            writer.call_extra(self.call_id, {"end_reason": reason})
            writer.call_ended(self.call_id, _utcnow(), call.hangup_by, disposition)  # type: ignore[arg-type]
            log_event(
                log,
                "call_ended",
                call_id=self.call_id,
                disposition=disposition,
                reason=reason,
                hangup_by=call.hangup_by,
            )
            if ran is not None and self.deps.after_call is not None:
                await self.deps.after_call(self._handled(ran, disposition))

    def _handled(self, flow: Flow, disposition: str) -> HandledCall:
        """What the ticket policy needs to know about this call, now that it ended."""
        result, control = self.ivr_result, self.control
        visits = control.queue_visits if control is not None else []
        taken = [v for v in visits if v.answered_at is not None]
        queue = (taken[0] if taken else visits[-1]).queue if visits else (result.queue if result else None)
        intent = result.variables.get("intent") if result is not None else None
        return HandledCall(
            call_id=self.call_id,
            caller=self._caller(),
            caller_name=self._caller_name(),
            started_at=self.started_at,
            ended_at=_utcnow(),
            disposition=disposition,
            flow=flow.id,
            ivr_outcome=result.outcome if result is not None else "caller_hangup",
            queue=queue,
            agent=taken[-1].agent if taken else None,
            intent=str(intent) if intent else None,
            language=control.language if control is not None else None,
            transcript=tuple(
                Turn(u.speaker, u.text, u.start, u.confidence)
                for u in sorted(self.transcript, key=lambda u: u.start)
            ),
            recording=self.recording,
            csat=survey_answer(flow, result.variables, result.ivr_path) if result is not None else None,
        )

    async def _answer_and_serve(self) -> str:
        call, settings = self.call, self.deps.settings
        self.sdp.local_ip = self.deps.endpoint.local_ip_for(call.source.host)
        bind_ip = "::" if ":" in self.sdp.local_ip else "0.0.0.0"
        try:
            self.rtp = await RtpSession.open(
                allocator=self.deps.media.ports,
                scheduler=self.deps.media.scheduler,
                local_ip=bind_ip,
                ptime_ms=settings.media.ptime_ms,
                on_dtmf=self._on_dtmf,
                inband_dtmf=settings.media.inband_dtmf,
            )
        except RtpPortsExhausted:
            call.reject(503, extra=[("Retry-After", "10")])
            self.end_reason = "no-rtp-port"
            return REJECTED
        offer: sdp.SessionDescription | None = None
        if call.invite.body:
            answer = self._negotiate(call.invite)
            if isinstance(answer, int):
                reason = "Incompatible media format" if answer == 488 else "Malformed SDP"
                call.reject(answer, extra=[("Warning", f'399 callcenter "{reason}"')])
                self.end_reason = "sdp-rejected"
                return REJECTED
            body = answer
        else:  # RFC 3264 §5 late offer: we offer in the 200, the answer comes in the ACK
            offer = self.sdp.offer(self.rtp)
            body = offer.to_bytes()
        ring_s = settings.calls.ring_s
        if ring_s > 0 and call.state == "early":
            call.ring()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(call.ended), ring_s)
        if call.state != "early":
            return ABANDONED  # CANCEL (or an early BYE) arrived while we were ringing or setting up
        call.on_reinvite = self._on_reinvite
        call.on_info = self._on_info
        if not call.answer(body):
            return ABANDONED
        self.deps.writer.call_answered(self.call_id, _utcnow())
        if settings.calls.record:
            self._start_recording()
        log_event(log, "call_answered", call_id=self.call_id, level=logging.DEBUG, codec=self.rtp.codec)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tasks = [tg.create_task(self._media_timeout_watch())]
            if offer is not None:
                tasks.append(tg.create_task(self._apply_ack_answer(offer)))
            started = self._ivr_flow()
            ivr: asyncio.Task[None] | None = None
            if started is not None:
                ivr = tg.create_task(self._run_ivr(*started))
            else:
                demo_s = settings.calls.demo_hangup_after_s
                if demo_s > 0:
                    tasks.append(tg.create_task(self._hangup_after(demo_s)))
                self.rtp.play(looping(_tone_frames(settings.calls.demo_tone_hz, self.rtp.codec)))
            ended: asyncio.Future[str] = call.ended
            hangup = tg.create_task(self._hangup_requested.wait())
            waiters: list[asyncio.Future[Any]] = [ended, hangup]
            if ivr is not None:
                waiters.append(ivr)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            if ivr is not None:
                await self._stop_ivr(ivr)
            if not ended.done():
                # Release media now; the BYE transaction may take up to 32 s against a vanished phone.
                self._release_media()
                await call.hangup(self.end_reason)
            else:
                hangup.cancel()
            self._tg = None  # tasks still running (e.g. a transcript draining) finish before the record
        outcome = call.ended.result()
        if outcome in (END_BYE, END_NO_ACK) and self.end_reason is None:
            self.end_reason = outcome
        return ANSWERED if outcome != END_CANCEL else ABANDONED

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run ``coro`` (which must not raise: it would end the call) in the call's TaskGroup; None
        when the call is no longer answered."""
        if self._tg is None:
            coro.close()
            return None
        try:
            return self._tg.create_task(coro)
        except RuntimeError:  # the TaskGroup is finishing
            coro.close()
            return None

    # -- IVR ------------------------------------------------------------------------------------------

    def _ivr_flow(self) -> tuple[Flow, Services] | None:
        runtime = self.deps.ivr
        return runtime.start_flow(self._called()) if runtime is not None else None

    def _called(self) -> str:
        try:
            return parse_uri(self.call.invite.uri).user or ""
        except ValueError:
            return ""

    def _caller(self) -> str:
        try:
            return parse_name_addr(self.call.from_header).parsed_uri().user or ""
        except ValueError:
            return ""

    def live_view(self) -> dict[str, Any]:
        """What an agent's screen-pop shows while the call is up: who calls, where the IVR took them,
        the queue and agent, the transcript so far and the KB articles suggested for it."""
        control, runner = self.control, self.runner
        visits = control.queue_visits if control is not None else []
        return {
            "sip_call_id": self.call_id,
            # False from the hang-up on: the session stays listed a moment while its record is written.
            "live": self.call.state != "terminated",
            "from": self.call.from_header,
            "to": self.call.to_header,
            "caller": self._caller(),
            "caller_name": self._caller_name(),
            "called": self._called(),
            "flow": runner.flow.id if runner is not None else None,
            "ivr_path": list(runner.ivr_path) if runner is not None else [],
            "intent": (str(runner.variables.get("intent") or "") or None) if runner is not None else None,
            "queue": visits[-1].queue if visits else None,
            "agent": control.agent if control is not None else None,
            "dtmf": "".join(self.digits),
            "transcript": [u.as_json() for u in sorted(self.transcript, key=lambda u: u.start)],
            # agent assist: the top KB articles for the conversation so far (calls/assist.py)
            "suggestions": control.assist_suggestions() if control is not None else [],
            # a supervisor listening in (calls/monitor.py): the wallboard shows it again after a reload
            "monitor": monitor_view(control.runtime.acd, self.call_id) if control is not None else None,
        }

    def _caller_name(self) -> str | None:
        try:
            return parse_name_addr(self.call.from_header).display or None
        except ValueError:
            return None

    async def _run_ivr(self, flow: Flow, services: Services) -> None:
        assert self.deps.ivr is not None
        self.control = LiveCallControl(
            self,
            self.deps.ivr,
            language=flow.language,
            transcript=self.transcript,
            caller=self._caller(),
            caller_name=self._caller_name(),
        )
        info = CallInfo(call_id=self.call_id, caller=self._caller(), called=self._called())
        self.runner = FlowRunner(flow, self.control, services, call=info)
        log_event(log, "ivr_started", call_id=self.call_id, level=logging.DEBUG, flow=flow.id)
        self.ivr_result = await self.runner.run()

    async def _stop_ivr(self, ivr: asyncio.Task[None]) -> None:
        """The call is ending (BYE, our hang-up) or the flow finished: let the runner note where the
        caller was (its CallControl raises CallerHangup from now on), cancel it if it lingers."""
        if not ivr.done():
            if self.control is not None:
                self.control.caller_gone()
            await asyncio.wait([ivr], timeout=2.0)
            if not ivr.done():
                ivr.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ivr
        if not self.call.ended.done():
            self.request_hangup("ivr_ended")  # the flow ran out without hanging up (e.g. a transfer)

    def _record_ivr(self) -> None:
        if self.runner is None:
            return
        result = self.ivr_result
        extras: dict[str, Any] = {
            "flow": self.runner.flow.id,
            "ivr_path": result.ivr_path if result is not None else list(self.runner.ivr_path),
            "ivr_outcome": result.outcome if result is not None else "caller_hangup",
        }
        if result is not None:
            extras["ivr_reason"] = result.reason
            if result.queue is not None:
                extras["queue"] = result.queue
        self.deps.writer.call_extra(self.call_id, extras)
        self.runner = None

    def _record_queue(self, disposition: str) -> str:
        """Queue, agent, wait and talk time on the record; the queue's outcome becomes the disposition
        (answered by an agent, abandoned in the queue, overflowed, or a voicemail left)."""
        control = self.control
        if control is None:
            return disposition
        visits = control.queue_visits
        if visits:
            last = visits[-1]
            taken = [v for v in visits if v.answered_at is not None]
            answered = taken[0] if taken else None
            first_at = visits[0].enqueued_at
            wait_end = answered.answered_at if answered is not None else (last.ended_at or first_at)
            self.deps.writer.call_extra(
                self.call_id,
                {
                    "queue": (answered or last).queue,
                    # the last one who had the caller (after transfers); all of them in `agents`
                    "agent": taken[-1].agent if taken else None,
                    "agents": [v.agent for v in taken],
                    "offered_agents": [a for v in visits for a in v.offered],
                    "wait_s": round((wait_end or first_at) - first_at, 2),
                    "talk_s": round(sum(v.as_json()["talk_s"] for v in visits), 2),
                    "queue_visits": [v.as_json() for v in visits],
                },
            )
            if answered is not None:
                disposition = "answered"
            elif control.voicemails:
                disposition = "voicemail"
            else:
                disposition = last.disposition
        elif control.voicemails:
            disposition = "voicemail"
        if control.voicemails:
            self.deps.writer.call_extra(self.call_id, {"voicemails": list(control.voicemails)})
        if control.transcript_dropped:
            self.deps.writer.call_extra(self.call_id, {"transcript_dropped": control.transcript_dropped})
        return disposition

    def _negotiate(self, request: SipRequest) -> bytes | int:
        """Our SDP answer to the offer in `request`, or the status to refuse it with."""
        assert self.rtp is not None
        answer = self.sdp.answer(request.body, self.rtp)
        if not isinstance(answer, int) and self.sdp.media is not None:
            self._expect_rtp = self.sdp.media.receives
        return answer

    def _on_reinvite(self, request: SipRequest) -> tuple[int, bytes]:
        """Hold/resume and address changes (RFC 3264 §8); a refused re-offer keeps the old media."""
        status, body = self.sdp.reinvite(request, self.rtp)
        if status == 200 and request.body and self.sdp.media is not None:
            self._expect_rtp = self.sdp.media.receives  # a held peer legitimately sends nothing
        return status, body

    async def _apply_ack_answer(self, offer: sdp.SessionDescription) -> None:
        await self.call.acked.wait()
        assert self.rtp is not None
        try:
            media = sdp.process_answer(offer, self.call.ack_body)
            self.rtp.apply(media)
            self._expect_rtp = media.receives
        except (sdp.SdpParseError, sdp.SdpNegotiationError):
            self.request_hangup("bad-sdp-in-ack")

    async def _media_timeout_watch(self) -> None:
        """No RTP for `rtp_timeout_s` while the peer should be sending → hang up (BYE)."""
        assert self.rtp is not None
        timeout = self.deps.settings.media.rtp_timeout_s
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            if self.rtp.last_received_at is not None:
                last_seen = max(last_seen, self.rtp.last_received_at)
            if not self._expect_rtp:
                last_seen = now  # a held peer sends nothing, legitimately (RFC 3264 §8.4)
            if now - last_seen >= timeout:
                self.request_hangup("rtp-timeout")
                return

    async def _hangup_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.request_hangup("demo-timeout")

    def _on_dtmf(self, digit: str, source: str) -> None:
        self.digits.append(digit)
        if self.control is not None:
            self.control.on_digit(digit)
        log_event(log, "dtmf", call_id=self.call_id, level=logging.DEBUG, digit=digit, source=source)

    def _on_info(self, request: SipRequest) -> None:
        """SIP INFO digits (application/dtmf-relay, application/dtmf) join the RTP ones."""
        try:
            info = dtmf.parse_info(request.headers.get("Content-Type") or "", request.body)
        except dtmf.DtmfParseError:
            log_event(log, "dtmf_info_malformed", call_id=self.call_id, level=logging.DEBUG)
            return
        if info is not None:
            self._on_dtmf(info.digit, "info")

    def start_recording(self) -> None:
        """Record the call from now on (a flow's queue node with ``record: true`` asks when an agent
        answers); nothing when it is recorded already or its media is gone."""
        if self.recorder is None and self.rtp is not None and not self.rtp.closed:
            self._start_recording()

    def _start_recording(self) -> None:
        assert self.rtp is not None
        day = _utcnow().strftime("%Y-%m-%d")
        safe_id = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in self.call_id)[:120]
        path = self.deps.settings.data_dir / "recordings" / day / f"{safe_id}.wav"
        try:
            recorder = CallRecorder(path)
        except (RecordingError, OSError) as exc:
            log_event(log, "recording_failed", call_id=self.call_id, level=logging.ERROR, error=str(exc))
            return
        rtp = self.rtp
        rtp.add_audio_tap(recorder.tap(LEFT))
        rtp.set_send_tap(lambda payload, now: recorder.write_g711(RIGHT, payload, rtp.codec, now))
        self.recorder = recorder
        self.recording = str(path)
        self.deps.writer.call_extra(self.call_id, {"recording": str(path)})

    def _release_media(self) -> None:
        """Stats onto the record, the recording finalised (in its worker), the RTP ports freed."""
        if self.rtp is None:
            return
        self._record_media_stats()
        if self.recorder is not None:
            self.recorder.close()  # the WAV header is written by the recorder's worker thread
            self.recorder = None
        self.rtp.close()
        self.rtp = None

    def _record_media_stats(self) -> None:
        if self.rtp is None:
            return
        s = self.rtp.stats()
        media: dict[str, Any] = {
            "codec": self.rtp.codec,
            "packets_sent": s.packets_sent,
            "packets_received": s.packets_received,
            "packets_lost": s.packets_lost,
            "jitter_ms": round(s.jitter_ms, 2),
            "malformed": s.malformed,
        }
        if s.remote_fraction_lost is not None:
            media["remote_fraction_lost"] = s.remote_fraction_lost
            media["remote_jitter_ms"] = s.remote_jitter_ms
        if s.playout.played or s.playout.concealed:
            media["playout"] = dataclasses.asdict(s.playout)
        self.deps.writer.call_extra(self.call_id, {"rtp": media})


def _reason_phrase(text: str) -> str:
    """A Reason-Phrase from an error message: printable ASCII, one line, short (RFC 3261 §25.1)."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean[:80] or "Bad Request"
