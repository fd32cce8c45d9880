"""G.711 μ-law (PCMU) and A-law (PCMA) for 16-bit linear PCM.

Linear audio is a native-endian ``int16`` numpy array (or ``bytes`` holding such samples); G.711 audio
is ``bytes``, one code per sample. The work is done by ``audioop`` (stdlib up to 3.12; on 3.13+ the
``audioop-lts`` distribution installs a module of the same name). Without it, 64 Ki-entry numpy
lookup tables built from the ITU-T G.711 segment rules (Sun's reference ``g711.c``) are used; the
tests check both paths against each other over every 16-bit input.

Round trip, checked over all 256 codes: A-law decode→encode is the identity; μ-law too except 0x7F
("negative zero", decodes to 0), which re-encodes as 0xFF.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop

        _AUDIOOP: ModuleType | None = _audioop
    except ImportError:  # pragma: no cover - 3.13+ without audioop-lts
        _AUDIOOP = None

Pcm = npt.NDArray[np.int16]
PcmLike = Pcm | bytes | bytearray | memoryview
CodecName = Literal["PCMU", "PCMA"]

SAMPLE_RATE: Final = 8000
# The code a silent (0) sample encodes to; a frame of it is "digital silence".
SILENCE_CODE: Final[dict[str, int]] = {"PCMU": 0xFF, "PCMA": 0xD5}


# --- reference algorithm on numpy (used for the decode tables and the fallback encoder) ----------

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _np_lin2ulaw(pcm: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # G.711 μ-law on the 14-bit magnitude: bias 0x21 (0x84 >> 2), clip at 8159.
    val = pcm >> 2
    mask = np.where(val < 0, 0x7F, 0xFF)
    val = np.minimum(np.abs(val), 8159) + 0x21
    seg = np.searchsorted(_SEG_UEND, val, side="left")
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((val >> (seg + 1)) & 0xF))
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _np_lin2alaw(pcm: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # G.711 A-law on the 13-bit value; even bits inverted by the 0x55 in the mask.
    val = pcm >> 3
    neg = val < 0
    mask = np.where(neg, 0x55, 0xD5)
    val = np.where(neg, -val - 1, val)
    seg = np.searchsorted(_SEG_AEND, val, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((val >> shift) & 0xF))
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _ulaw2lin_table() -> Pcm:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw2lin_table() -> Pcm:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW_TO_LINEAR: Final[Pcm] = _ulaw2lin_table()
ALAW_TO_LINEAR: Final[Pcm] = _alaw2lin_table()
ULAW_TO_LINEAR.flags.writeable = False
ALAW_TO_LINEAR.flags.writeable = False

_ALL16 = np.arange(-32768, 32768, dtype=np.int32)
_LIN2ULAW: Final = np.roll(_np_lin2ulaw(_ALL16), -32768)  # indexed by the uint16 view of a sample
_LIN2ALAW: Final = np.roll(_np_lin2alaw(_ALL16), -32768)
del _ALL16

# Direct code-to-code transcoding (PCMU <-> PCMA bridges): bytes.translate, no numpy on the path.
ULAW_TO_ALAW: Final[bytes] = _LIN2ALAW[ULAW_TO_LINEAR.view(np.uint16)].tobytes()
ALAW_TO_ULAW: Final[bytes] = _LIN2ULAW[ALAW_TO_LINEAR.view(np.uint16)].tobytes()


def _as_pcm_bytes(pcm: PcmLike) -> bytes:
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16:
            raise ValueError(f"linear PCM must be int16, got {pcm.dtype}")
        return np.ascontiguousarray(pcm).tobytes()
    if len(pcm) % 2:
        raise ValueError("linear PCM bytes must hold whole 16-bit samples")
    return pcm if isinstance(pcm, bytes) else bytes(pcm)


def _as_pcm_array(pcm: PcmLike) -> Pcm:
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16:
            raise ValueError(f"linear PCM must be int16, got {pcm.dtype}")
        return pcm
    if len(pcm) % 2:
        raise ValueError("linear PCM bytes must hold whole 16-bit samples")
    return np.frombuffer(pcm, dtype=np.int16)


# --- fallback implementations (also what the tests compare audioop against) ------------------------


def np_ulaw_encode(pcm: PcmLike) -> bytes:
    return bytes(_LIN2ULAW[_as_pcm_array(pcm).view(np.uint16)].tobytes())


def np_alaw_encode(pcm: PcmLike) -> bytes:
    return bytes(_LIN2ALAW[_as_pcm_array(pcm).view(np.uint16)].tobytes())


def np_ulaw_decode(data: bytes) -> Pcm:
    return ULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def np_alaw_decode(data: bytes) -> Pcm:
    return ALAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


# --- public API -----------------------------------------------------------------------------------

if _AUDIOOP is not None:
    _ao = _AUDIOOP

    def ulaw_encode(pcm: PcmLike) -> bytes:
        """int16 samples → μ-law codes."""
        return bytes(_ao.lin2ulaw(_as_pcm_bytes(pcm), 2))

    def alaw_encode(pcm: PcmLike) -> bytes:
        """int16 samples → A-law codes."""
        return bytes(_ao.lin2alaw(_as_pcm_bytes(pcm), 2))

    def ulaw_decode(data: bytes) -> Pcm:
        """μ-law codes → int16 samples (a new writable array)."""
        return np.frombuffer(_ao.ulaw2lin(data, 2), dtype=np.int16).copy()

    def alaw_decode(data: bytes) -> Pcm:
        """A-law codes → int16 samples (a new writable array)."""
        return np.frombuffer(_ao.alaw2lin(data, 2), dtype=np.int16).copy()

else:  # pragma: no cover - exercised through the np_* functions in the tests
    ulaw_encode = np_ulaw_encode
    alaw_encode = np_alaw_encode
    ulaw_decode = np_ulaw_decode
    alaw_decode = np_alaw_decode


def encode(pcm: PcmLike, codec: str) -> bytes:
    """Encode int16 samples with ``codec`` ("PCMU" or "PCMA", case-insensitive)."""
    c = codec.upper()
    if c == "PCMU":
        return ulaw_encode(pcm)
    if c == "PCMA":
        return alaw_encode(pcm)
    raise ValueError(f"not a G.711 codec: {codec!r}")


def decode(data: bytes, codec: str) -> Pcm:
    """Decode G.711 ``codec`` ("PCMU" or "PCMA") to int16 samples."""
    c = codec.upper()
    if c == "PCMU":
        return ulaw_decode(data)
    if c == "PCMA":
        return alaw_decode(data)
    raise ValueError(f"not a G.711 codec: {codec!r}")


def ulaw_to_alaw(data: bytes) -> bytes:
    return data.translate(ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    return data.translate(ALAW_TO_ULAW)


def silence(codec: str, samples: int) -> bytes:
    """``samples`` codes of digital silence in ``codec``."""
    try:
        return bytes([SILENCE_CODE[codec.upper()]]) * samples
    except KeyError:
        raise ValueError(f"not a G.711 codec: {codec!r}") from None
