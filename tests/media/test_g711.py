import numpy as np
import pytest

from callcenter.media import g711

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_round_trip_over_all_codes_is_identity_except_negative_zero():
    back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    differing = [c for c in range(256) if back[c] != c]
    # 0x7F and 0xFF both decode to 0; 0 encodes as 0xFF.
    assert differing == [0x7F]
    assert back[0x7F] == 0xFF


def test_alaw_round_trip_over_all_codes_is_identity():
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(
    ("codec", "code", "value"),
    [
        ("PCMU", 0xFF, 0), ("PCMU", 0x7F, 0), ("PCMU", 0x80, 32124), ("PCMU", 0x00, -32124),
        ("PCMU", 0xFE, 8), ("PCMU", 0x7E, -8),
        ("PCMA", 0xD5, 8), ("PCMA", 0x55, -8), ("PCMA", 0xAA, 32256), ("PCMA", 0x2A, -32256),
    ],
)
def test_known_code_values(codec, code, value):
    assert g711.decode(bytes([code]), codec)[0] == value


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_quantiser_is_monotonic_and_close_over_every_16_bit_sample(codec):
    decoded = g711.decode(g711.encode(ALL_SAMPLES, codec), codec).astype(np.int32)
    assert np.all(np.diff(decoded) >= 0)
    x = ALL_SAMPLES.astype(np.int32)
    limit = 32124 if codec == "PCMU" else 32256
    inside = np.abs(x) <= limit
    # Logarithmic quantiser: error at most half a step, a step being 1/16 of the segment (~|x|/16).
    err = np.abs(decoded - x)[inside]
    assert np.all(err <= np.abs(x[inside]) / 16 + 16)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_numpy_fallback_matches_audioop_everywhere(codec):
    if codec == "PCMU":
        assert g711.np_ulaw_encode(ALL_SAMPLES) == g711.ulaw_encode(ALL_SAMPLES)
        assert np.array_equal(g711.np_ulaw_decode(ALL_CODES), g711.ulaw_decode(ALL_CODES))
    else:
        assert g711.np_alaw_encode(ALL_SAMPLES) == g711.alaw_encode(ALL_SAMPLES)
        assert np.array_equal(g711.np_alaw_decode(ALL_CODES), g711.alaw_decode(ALL_CODES))


def test_bytes_and_array_inputs_agree():
    pcm = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(pcm) == g711.ulaw_encode(pcm.tobytes())
    assert g711.alaw_encode(pcm) == g711.alaw_encode(bytearray(pcm.tobytes()))
    assert g711.encode(pcm[::2], "pcmu") == g711.ulaw_encode(np.ascontiguousarray(pcm[::2]))


def test_decoded_arrays_are_int16_and_writable():
    out = g711.ulaw_decode(b"\x00\xff")
    assert out.dtype == np.int16
    out[0] = 1  # callers mix into it


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        g711.ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        g711.alaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError):
        g711.encode(np.zeros(4, dtype=np.int16), "G729")
    with pytest.raises(ValueError):
        g711.silence("opus", 160)


def test_transcoding_tables_equal_decoding_then_encoding():
    assert g711.ulaw_to_alaw(ALL_CODES) == g711.alaw_encode(g711.ulaw_decode(ALL_CODES))
    assert g711.alaw_to_ulaw(ALL_CODES) == g711.ulaw_encode(g711.alaw_decode(ALL_CODES))


def test_silence_frames_decode_to_near_zero():
    for codec in ("PCMU", "PCMA"):
        frame = g711.silence(codec, 160)
        assert len(frame) == 160
        assert np.abs(g711.decode(frame, codec)).max() <= 8
