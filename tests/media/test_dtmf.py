"""RFC 4733 events in and out, and DTMF in SIP INFO bodies."""

import asyncio
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.core.clock import FakeClock
from callcenter.media import rtp
from callcenter.media.dtmf import (
    DtmfEvent,
    DtmfParseError,
    InfoDtmf,
    Rfc4733Receiver,
    Rfc4733Transmitter,
    decode_event,
    encode_event,
    parse_dtmf_plain,
    parse_dtmf_relay,
    parse_info,
)
from callcenter.media.pacer import RtpSender
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession

T0 = 500.0
SSRC = 0x1234


class Rx:
    def __init__(self, **kw):
        self.events: list[DtmfEvent] = []
        self.presses: list[DtmfEvent] = []
        self.r = Rfc4733Receiver(self.events.append, on_press=self.presses.append, **kw)

    def ev(self, ts, event, duration, end=False, volume=10, now=T0, ssrc=SSRC):
        self.r.feed(ssrc, ts & 0xFFFFFFFF, encode_event(event, duration, end=end, volume=volume), now)

    @property
    def digits(self):
        return "".join(e.digit for e in self.events)

    @property
    def pressed(self):
        return "".join(e.digit for e in self.presses)


def press(rx, ts, event, n_updates=4, spp=160, t=T0, ends=3, volume=10):
    """A key press as a phone sends it: updates every packet time, then the end packet `ends` times."""
    for i in range(n_updates):
        rx.ev(ts, event, (i + 1) * spp, now=t + i * 0.02, volume=volume)
    for j in range(ends):
        rx.ev(ts, event, (n_updates + 1) * spp, end=True, now=t + (n_updates + j) * 0.02, volume=volume)
    return t + (n_updates + ends) * 0.02


def test_payload_round_trip_and_validation():
    assert encode_event(11, 800, end=True, volume=7) == bytes([11, 0x87, 0x03, 0x20])
    assert decode_event(bytes([11, 0x87, 0x03, 0x20])) == (11, True, 7, 800)
    with pytest.raises(DtmfParseError):
        decode_event(b"\x01\x02")
    with pytest.raises(ValueError):
        encode_event(1, 70000)
    with pytest.raises(ValueError):
        encode_event(1, 100, volume=64)


def test_three_end_packets_give_one_digit_with_duration_and_volume():
    rx = Rx()
    press(rx, 1000, 5, n_updates=4, volume=13)
    assert rx.digits == "5"
    (e,) = rx.events
    assert (e.timestamp, e.duration, e.volume, e.ended) == (1000, 800, 13, True)
    assert e.duration_ms == 100.0
    assert not rx.r.pending


def test_a_sequence_of_digits_including_the_same_digit_twice():
    rx = Rx()
    t = T0
    ts = 10_000
    for event in (1, 1, 10, 11, 0, 15):
        t = press(rx, ts, event, t=t)
        ts += 2000  # the next press starts later in RTP time: a new timestamp, a new event
    assert rx.digits == "11*#0D"


def test_only_end_packets_arriving_still_give_the_digit_once():
    rx = Rx()
    for _ in range(3):
        rx.ev(4000, 9, 960, end=True)
    assert rx.digits == "9"


def test_lost_end_packets_the_next_event_closes_the_previous_one():
    rx = Rx()
    press(rx, 1000, 2, ends=0)
    assert rx.digits == "" and rx.r.pending
    press(rx, 3000, 3, t=T0 + 1)
    assert rx.digits == "23"
    assert [e.ended for e in rx.events] == [False, True]
    assert rx.events[0].duration == 640  # the last update's duration


def test_lost_end_packets_time_out_in_rtp_time_from_voice_packets():
    rx = Rx(end_timeout_ms=400)
    t = press(rx, 1000, 4, ends=0)  # the event covers 1000..1640
    r = rx.r
    # Voice packets resume. Their timestamps, not the arrival times, decide (all arrive at once
    # here): the event ends once the RTP clock passed its end by 400 ms (3200 units).
    for ts in range(1800, 1640 + 3200, 160):
        r.observe(ts, t)
        assert rx.digits == ""
    r.observe(1640 + 3200, t)
    assert rx.digits == "4"
    assert rx.events[0].ended is False


def test_lost_end_packets_time_out_on_the_timer_when_nothing_arrives():
    rx = Rx(end_timeout_ms=400)
    rx.ev(1000, 7, 160, now=T0)
    rx.ev(1000, 7, 320, now=T0 + 0.02)
    timer = rx.r.get_timer()
    assert timer == pytest.approx(T0 + 0.02 + 0.4)
    rx.r.handle_timer(timer - 0.001)
    assert rx.digits == ""
    rx.r.handle_timer(timer)
    assert rx.digits == "7"
    assert rx.r.get_timer() is None


def test_timestamps_wrap_around():
    rx = Rx()
    t = press(rx, 2**32 - 400, 1)
    press(rx, 2**32 - 400 + 2000, 2, t=t)  # wraps past zero
    assert rx.digits == "12"


def test_reordered_stragglers_of_an_earlier_event_are_ignored():
    rx = Rx()
    press(rx, 1000, 1)
    press(rx, 3000, 2, ends=1)
    rx.ev(1000, 1, 800, end=True)  # a late end retransmission of the first event
    rx.ev(1000, 1, 480)  # a late update of it
    rx.ev(3000, 2, 480)  # an update overtaken by its own end
    assert rx.digits == "12"
    assert rx.r.stale == 2


def test_a_new_ssrc_closes_the_open_event_and_starts_afresh():
    rx = Rx()
    rx.ev(1000, 6, 320)
    rx.ev(1000, 6, 480, ssrc=999)  # same timestamp, another source: a different event
    rx.ev(1000, 6, 640, end=True, ssrc=999)
    assert rx.digits == "66"


def test_non_dtmf_events_are_tracked_but_not_reported():
    rx = Rx()
    press(rx, 1000, 16)  # flash
    press(rx, 3000, 8, t=T0 + 1)
    assert rx.digits == "8" and rx.r.ignored == 1


def test_long_press_split_into_segments_is_one_digit():
    rx = Rx()
    # RFC 4733 §2.5.1.3: a press longer than 65535 units continues in a new segment whose
    # timestamp is where the previous one's maximal duration ended.
    rx.ev(1000, 0, 65000)
    rx.ev(1000, 0, 65535)
    rx.ev(1000 + 65535, 0, 800)
    rx.ev(1000 + 65535, 0, 1600, end=True)
    assert rx.digits == "0"
    assert rx.events[0].duration == 65535 + 1600
    assert rx.events[0].timestamp == 1000


def test_a_different_digit_reusing_the_last_timestamp_is_a_new_press():
    rx = Rx()
    press(rx, 1000, 1)
    press(rx, 1000, 2, t=T0 + 1)  # against §2.5.1.2, but seen in the wild
    assert rx.digits == "12"


def test_short_payloads_are_counted_not_fatal():
    rx = Rx()
    rx.r.feed(SSRC, 1, b"\x01", T0)
    assert rx.r.malformed == 1 and rx.digits == ""


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=40))
def test_receiver_never_fails_on_arbitrary_packets(packets):
    rx = Rx()
    for i, (ts, payload) in enumerate(packets):
        rx.r.feed(SSRC, ts, payload, T0 + i * 0.02)
        rx.r.observe(ts, T0 + i * 0.02)
    rx.r.handle_timer(T0 + 100)
    assert not rx.r.pending
    assert all(len(e.digit) == 1 for e in rx.events)


# --- key-down: the digit at the first packet of its event ---------------------------------------


def test_a_digit_is_pressed_at_its_first_packet_and_only_once():
    rx = Rx()
    rx.ev(1000, 5, 160)
    assert rx.pressed == "5" and rx.digits == ""  # acted on while the key is still held
    assert rx.presses[0].timestamp == 1000 and not rx.presses[0].ended
    for d in (320, 480, 640):
        rx.ev(1000, 5, d)
    for _ in range(3):  # §2.5.1.4: the end packet three times
        rx.ev(1000, 5, 800, end=True)
    assert rx.pressed == "5" and rx.digits == "5"


def test_a_start_packet_sent_several_times_presses_once():
    rx = Rx()
    for _ in range(3):  # senders may repeat the first packet too (§2.5.1.2: same timestamp)
        rx.ev(1000, 8, 160)
    press(rx, 1000, 8)
    assert rx.pressed == "8" and rx.digits == "8"


def test_a_new_press_of_the_same_key_is_a_new_timestamp_and_a_new_digit():
    rx = Rx()
    t = press(rx, 1000, 7)
    press(rx, 3000, 7, t=t)
    assert rx.pressed == "77"


def test_lost_start_packet_the_first_update_to_arrive_presses_the_key():
    rx = Rx()
    rx.ev(1000, 3, 480)  # the packets with 160 and 320 were lost
    assert rx.pressed == "3"
    rx.ev(1000, 3, 640)
    rx.ev(1000, 3, 800, end=True)
    assert rx.pressed == "3" and rx.digits == "3"


def test_only_end_packets_arriving_press_the_key_once():
    rx = Rx()
    for _ in range(3):
        rx.ev(4000, 9, 960, end=True)
    assert rx.pressed == "9" and rx.presses[0].ended


def test_reordered_packets_never_repeat_a_digit():
    rx = Rx()
    rx.ev(1000, 1, 320)
    rx.ev(1000, 1, 160)  # overtaken by the next update
    rx.ev(1000, 1, 640, end=True)
    rx.ev(1000, 1, 480)  # an update overtaken by its end
    rx.ev(3000, 2, 160)
    rx.ev(1000, 1, 640, end=True)  # a late end retransmission of the first key
    rx.ev(3000, 2, 320, end=True)
    assert rx.pressed == "12"


def test_a_long_press_split_into_segments_presses_once():
    rx = Rx()
    rx.ev(1000, 0, 65000)
    rx.ev(1000, 0, 65535)
    rx.ev(1000 + 65535, 0, 800)  # §2.5.1.3: the next segment of the same press
    rx.ev(1000 + 65535, 0, 1600, end=True)
    assert rx.pressed == "0"


def test_a_key_timed_out_then_its_late_packets_do_not_press_it_again():
    rx = Rx(end_timeout_ms=400)
    rx.ev(1000, 4, 160, now=T0)
    rx.r.handle_timer(T0 + 1.0)  # the end packets are late: the event timed out
    assert rx.digits == "4"
    rx.ev(1000, 4, 320, now=T0 + 1.1)
    for _ in range(3):
        rx.ev(1000, 4, 800, end=True, now=T0 + 1.2)
    assert rx.pressed == "4" and rx.digits == "4"


def test_non_dtmf_events_press_nothing():
    rx = Rx()
    press(rx, 1000, 16)  # flash
    assert rx.pressed == ""


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(min_size=4, max_size=4)), max_size=40))
def test_presses_and_finished_events_always_agree(packets):
    # Whatever arrives, each key press is reported once at key-down and once at its end, in order.
    rx = Rx()
    for i, (ts, payload) in enumerate(packets):
        rx.r.feed(SSRC, ts, payload, T0 + i * 0.02)
    rx.r.handle_timer(T0 + 100)
    assert rx.pressed == rx.digits


async def test_a_session_delivers_the_digit_while_the_key_is_still_held():
    # The session's clocks never move: no end-of-event timeout can deliver the digit, only its
    # first packet. The packets after it (updates, three ends) must not deliver it again.
    clock = FakeClock()
    scheduler = MediaScheduler(clock=clock)
    got: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    def on_dtmf(digit: str, source: str) -> None:
        got.append((digit, source))
        arrived.set()

    session = await RtpSession.open(allocator=RtpPortAllocator(46000, 46999), scheduler=scheduler,
                                    local_ip="127.0.0.1", clock=clock, on_dtmf=on_dtmf)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        phone.bind(("127.0.0.1", 0))
        session.apply(NegotiatedMedia(
            remote_address="127.0.0.1", remote_port=phone.getsockname()[1],
            remote_rtcp_address="127.0.0.1", remote_rtcp_port=phone.getsockname()[1] + 1,
            payload_type=0, codec="PCMU", clock_rate=8000, telephone_event_pt=101, ptime=20,
            direction=Direction.SENDRECV, media_index=0))

        def send(seq: int, duration: int, end: bool = False) -> None:
            pkt = rtp.RtpPacket(payload_type=101, marker=seq == 0, sequence=seq, timestamp=8000,
                                ssrc=SSRC, payload=encode_event(5, duration, end=end))
            phone.sendto(pkt.serialize(), ("127.0.0.1", session.local_port))

        send(0, 160)
        await asyncio.wait_for(arrived.wait(), 10)
        assert got == [("5", "rfc4733")]
        for seq in range(1, 4):
            send(seq, 160 * (seq + 1))
        for seq in range(4, 7):
            send(seq, 800, end=True)
        arrived.clear()
        pkt = rtp.RtpPacket(payload_type=101, marker=True, sequence=7, timestamp=16000, ssrc=SSRC,
                            payload=encode_event(9, 160))
        phone.sendto(pkt.serialize(), ("127.0.0.1", session.local_port))  # the next key
        await asyncio.wait_for(arrived.wait(), 10)
        assert got == [("5", "rfc4733"), ("9", "rfc4733")]
    finally:
        phone.close()
        session.close()
        await scheduler.aclose()


# --- sending ---------------------------------------------------------------------------------


def run_sender(sender, slots, start=T0):
    out = []
    for i in range(slots):
        sender.poll(start + i * 0.02, out.append)
    return [rtp.parse(p) for p in out]


def make_sender():
    s = RtpSender(ssrc=77, payload_type=0, sequence=65533, timestamp=2**32 - 480, idle_frame=b"\xff" * 160)
    s.start(T0)
    return s


def test_transmitter_packets_follow_rfc4733():
    s = make_sender()
    tx = Rfc4733Transmitter("5", payload_type=101, samples_per_packet=160, duration=800, volume=10)
    done = []
    run_sender(s, 2)  # two voice packets first
    s.send_events(tx, done.append)
    pkts = run_sender(s, 9, start=T0 + 0.04)
    events = [p for p in pkts if p.payload_type == 101]
    voice = [p for p in pkts if p.payload_type == 0]
    assert [decode_event(p.payload) for p in events] == [
        (5, False, 10, 160), (5, False, 10, 320), (5, False, 10, 480), (5, False, 10, 640),
        (5, True, 10, 800), (5, True, 10, 800), (5, True, 10, 800),
    ]
    assert [p.marker for p in events] == [True] + [False] * 6
    start_ts = (2**32 - 480 + 2 * 160) % 2**32
    assert {p.timestamp for p in events} == {start_ts}  # the event's start, in every packet
    # Sequence numbers run on through voice and events alike (§2.5.1.6), wrapping.
    seqs = [p.sequence for p in pkts]
    assert seqs == [(65535 + i) % 65536 for i in range(9)]
    # Voice resumes on the stream's own clock, marked as a new talkspurt.
    assert voice[0].timestamp == (start_ts + 7 * 160) % 2**32 and voice[0].marker
    assert done == [True]
    assert pkts[0].ssrc == 77 and {p.ssrc for p in pkts} == {77}


def test_transmitter_sends_a_string_with_gaps_and_round_trips_through_the_receiver():
    s = make_sender()
    s.send_events(Rfc4733Transmitter("12#", payload_type=101, samples_per_packet=160, duration=640,
                                     gap=480))
    pkts = run_sender(s, 40)
    rx = Rx()
    for i, p in enumerate(pkts):
        if p.payload_type == 101:
            rx.r.feed(p.ssrc, p.timestamp, p.payload, T0 + i * 0.02)
        else:
            rx.r.observe(p.timestamp, T0 + i * 0.02)
    assert rx.digits == "12#"
    assert [e.duration for e in rx.events] == [640, 640, 640]
    kinds = "".join("e" if p.payload_type == 101 else "v" for p in pkts)
    assert kinds.startswith("eeeeee" + "vvv" + "eeeeee" + "vvv" + "eeeeee" + "v")


def test_a_playing_prompt_pauses_during_a_digit():
    s = make_sender()
    s.play([bytes([i]) * 160 for i in range(1, 6)])
    out = run_sender(s, 2)
    s.send_events(Rfc4733Transmitter("1", payload_type=101, samples_per_packet=160, duration=320))
    out += run_sender(s, 8, start=T0 + 0.04)
    assert [p.payload[0] if p.payload_type == 0 else "e" for p in out] == [
        1, 2, "e", "e", "e", "e", 3, 4, 5, 0xFF]


def test_a_stall_during_a_digit_still_reports_the_real_duration():
    s = make_sender()
    s.send_events(Rfc4733Transmitter("7", payload_type=101, samples_per_packet=160, duration=1600))
    out: list[bytes] = []
    s.poll(T0, out.append)
    s.poll(T0 + 0.1, out.append)  # the loop stalled for 80 ms: slots were skipped
    durations = [decode_event(rtp.parse(p).payload)[3] for p in out]
    assert durations == [160, 960]


def test_cancel_events_reports_false():
    s = make_sender()
    done = []
    s.send_events(Rfc4733Transmitter("123", payload_type=101, samples_per_packet=160, duration=800),
                  done.append)
    run_sender(s, 2)
    s.cancel_events()
    assert done == [False] and not s.sending_events


def test_transmitter_validates_its_arguments():
    with pytest.raises(ValueError):
        Rfc4733Transmitter("5x", payload_type=101, samples_per_packet=160, duration=800)
    with pytest.raises(ValueError):
        Rfc4733Transmitter("", payload_type=101, samples_per_packet=160, duration=800)
    with pytest.raises(ValueError):
        Rfc4733Transmitter("5", payload_type=101, samples_per_packet=160, duration=100)


# --- SIP INFO ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    (b"Signal=5\r\nDuration=160\r\n", InfoDtmf("5", 160)),
    (b"Signal=5\r\nDuration=160", InfoDtmf("5", 160)),
    (b"signal= *\nduration = 250\n", InfoDtmf("*", 250)),
    (b"Signal=#\r\n", InfoDtmf("#", None)),
    (b"Signal=11\r\nDuration=100\r\n", InfoDtmf("#", 100)),
    (b"Signal=10\r\n", InfoDtmf("*", None)),
    (b"Signal=a\r\nDuration=x\r\n", InfoDtmf("A", None)),
    (b"Signal: 3\r\nDuration: 90\r\n", InfoDtmf("3", 90)),
    ("Signal=0\r\n", InfoDtmf("0", None)),
])
def test_dtmf_relay_bodies(body, expected):
    assert parse_dtmf_relay(body) == expected
    assert parse_info("application/dtmf-relay", body) == expected


@pytest.mark.parametrize("body", [b"Duration=160\r\n", b"", b"Signal=\r\n", b"Signal=55\r\n",
                                  b"Signal=hf\r\n", b"Signal=5 6\r\n"])
def test_bad_dtmf_relay_bodies(body):
    with pytest.raises(DtmfParseError):
        parse_dtmf_relay(body)


def test_application_dtmf_bodies():
    assert parse_dtmf_plain(b"5") == InfoDtmf("5")
    assert parse_dtmf_plain(b" # \r\n") == InfoDtmf("#")
    assert parse_dtmf_plain(b"11") == InfoDtmf("#")
    assert parse_dtmf_plain(b"Signal=9\r\nDuration=100") == InfoDtmf("9", 100)
    for bad in (b"", b"  ", b"x", b"12x"):
        with pytest.raises(DtmfParseError):
            parse_dtmf_plain(bad)


def test_parse_info_dispatches_on_content_type():
    assert parse_info("Application/DTMF-Relay; charset=utf-8", b"Signal=1\r\n") == InfoDtmf("1")
    assert parse_info("application/dtmf", b"7") == InfoDtmf("7")
    assert parse_info("application/sdp", b"v=0") is None
    with pytest.raises(DtmfParseError):
        parse_info("application/dtmf", b"?")
