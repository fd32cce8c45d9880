import pytest

from callcenter.media.ports import RtpPortAllocator, RtpPortsExhausted


def test_hands_out_even_ports_with_rtcp_inside_the_range():
    a = RtpPortAllocator(10001, 10010)
    ports = [a.allocate() for _ in range(a.capacity)]
    assert ports == [10002, 10004, 10006, 10008]
    assert all(p % 2 == 0 and p + 1 <= 10010 for p in ports)


def test_exhaustion_raises_a_clear_error_and_release_recovers():
    a = RtpPortAllocator(20000, 20005)
    got = [a.allocate() for _ in range(3)]
    assert a.available == 0 and a.in_use == 3
    with pytest.raises(RtpPortsExhausted, match="all 3 RTP port pairs in 20000-20005 are in use"):
        a.allocate()
    assert a.release(got[1]) is True
    assert a.allocate() == got[1]


def test_round_robin_reuses_a_released_port_last():
    a = RtpPortAllocator(30000, 30007)  # pairs at 30000, 30002, 30004, 30006
    first = a.allocate()
    a.release(first)
    assert [a.allocate() for _ in range(4)] == [30002, 30004, 30006, 30000]


def test_double_or_foreign_release_does_not_duplicate_ports():
    a = RtpPortAllocator(40000, 40003)
    p = a.allocate()
    assert a.release(p) is True
    assert a.release(p) is False
    assert a.release(12345) is False
    assert [a.allocate(), a.allocate()] == [40002, 40000]
    with pytest.raises(RtpPortsExhausted):
        a.allocate()


@pytest.mark.parametrize(("lo", "hi"), [(80, 10000), (20000, 10000), (20000, 70000), (20001, 20002)])
def test_bad_ranges_are_refused(lo, hi):
    with pytest.raises(ValueError):
        RtpPortAllocator(lo, hi)
