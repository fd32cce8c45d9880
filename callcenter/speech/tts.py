"""espeak-ng text-to-speech through libespeak-ng (ctypes), in one dedicated worker thread.

Measured on this 2-core machine for a 5.6 s English sentence (p50 of 20): libespeak-ng via ctypes
5 ms, the ``espeak-ng --stdout`` CLI 17 ms (process start + WAV parsing), pyttsx3's espeak driver
10 ms (it also prints to stdout, writes a temporary WAV and drives the same global libespeak-ng
state). Calling the library directly is fastest and has no extra dependency, so it is used here.

libespeak-ng keeps process-global state and is not thread-safe: every call runs in a single
``ThreadPoolExecutor(max_workers=1)`` thread, so concurrent requests queue (each takes a few ms).
Synthesis is ~1000x real time, so one thread serves many calls; output at espeak's 22.05 kHz is
resampled to 8 kHz with soxr HQ in the same thread. The event loop only awaits a future.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np

from callcenter.speech.audio import resample
from callcenter.speech.base import SAMPLE_RATE, Pcm8k, SpeechError

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_DONT_EXIT: Final = 0x8000
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_RATE, _PITCH = 1, 3
_RATE_MIN, _RATE_MAX, _RATE_NORMAL = 80, 450, 175  # words per minute
_PITCH_NORMAL: Final = 50  # 0..100

# Pipeline revision: bump when the processing after espeak-ng changes (it is part of cache keys).
_PIPELINE: Final = "soxr-hq-8k-1"

# Default espeak-ng voice per language tag (lower-cased). Other tags are passed to espeak-ng as they
# are: it accepts language codes ("de", "fr", "ko") as voice names.
DEFAULT_VOICES: Final[Mapping[str, str]] = {
    "en": "en-us",
    "en-us": "en-us",
    "en-gb": "en-gb",
    "zh": "cmn",
    "zh-cn": "cmn",
    "zh-hans": "cmn",
    "cmn": "cmn",
    "yue": "yue",
    "zh-hk": "yue",
}

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    identifier: str  # what synthesize() takes, e.g. "gmw/en-US" (or a language such as "en-us")
    name: str
    languages: tuple[str, ...]


def voice_for(language: str) -> str:
    """The default espeak-ng voice for a BCP 47 language tag ("en-US" → "en-us", "zh-CN" → "cmn")."""
    tag = language.strip().lower().replace("_", "-")
    if tag in DEFAULT_VOICES:
        return DEFAULT_VOICES[tag]
    return DEFAULT_VOICES.get(tag.split("-")[0], tag)


def _load_library(path: str | None) -> ctypes.CDLL:
    candidates = [path] if path else ["libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")]
    for c in candidates:
        if not c:
            continue
        try:
            return ctypes.CDLL(c)
        except OSError:
            continue
    raise SpeechError("espeak-ng: libespeak-ng not found (install the espeak-ng package)")


class EspeakNgEngine:
    """``TtsEngine`` over libespeak-ng. ``voice`` is an espeak-ng voice name ("en-us", "cmn")."""

    name = "espeak-ng"

    def __init__(self, library: str | None = None, data_path: str | None = None) -> None:
        self._lib = _load_library(library)
        self._data_path = data_path
        lib = self._lib
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self._has_rate_query = hasattr(lib, "espeak_ng_GetSampleRate")
        if self._has_rate_query:
            lib.espeak_ng_GetSampleRate.restype = ctypes.c_int
        info = lib.espeak_Info(None)
        self._version = f"espeak-ng/{(info or b'?').decode()}/{_PIPELINE}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak-ng")
        # Everything below is touched only in the worker thread.
        self._initialized = False
        self._rate = 0
        self._voice: str | None = None
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._on_audio)  # referenced for the library's lifetime
        self._closed = False
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self._version

    async def synthesize(
        self, text: str, voice: str = "en-us", rate: float = 1.0, pitch: float = 1.0
    ) -> Pcm8k:
        if not 0.25 <= rate <= 4.0:
            raise ValueError(f"rate {rate} outside 0.25..4.0")
        if not 0.0 <= pitch <= 2.0:
            raise ValueError(f"pitch {pitch} outside 0.0..2.0")
        if self._closed:
            raise SpeechError("espeak-ng: engine closed")
        fut = self._executor.submit(self._synthesize, text, voice, rate, pitch)
        return await asyncio.wrap_future(fut)

    async def voices(self) -> list[VoiceInfo]:
        """The voices this espeak-ng installation offers."""
        return await asyncio.wrap_future(self._executor.submit(self._list_voices))

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Blocking ``aclose``: waits for running jobs (for CLIs and test fixtures)."""
        self._closed = True
        self._executor.shutdown()

    # --- worker thread ----------------------------------------------------------------------------

    def _init(self) -> None:
        if self._initialized:
            return
        path = self._data_path.encode() if self._data_path else None
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise SpeechError("espeak-ng: initialisation failed (espeak-ng-data missing?)")
        self._lib.espeak_SetSynthCallback(self._callback)
        self._rate = rate
        self._initialized = True

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
        if n > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, n * 2))
        return 0  # 0 = continue

    def _select_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            self._voice = None
            raise SpeechError(f"espeak-ng: unknown voice {voice!r}")
        self._voice = voice
        if self._has_rate_query:  # mbrola voices run at 16 kHz
            self._rate = self._lib.espeak_ng_GetSampleRate()

    def _synthesize(self, text: str, voice: str, rate: float, pitch: float) -> Pcm8k:
        self._init()
        self._select_voice(voice)
        wpm = min(_RATE_MAX, max(_RATE_MIN, round(_RATE_NORMAL * rate)))
        self._lib.espeak_SetParameter(_RATE, wpm, 0)
        self._lib.espeak_SetParameter(_PITCH, min(100, max(0, round(_PITCH_NORMAL * pitch))), 0)
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise SpeechError(f"espeak-ng: synthesis failed (error {err})")
        pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        self._chunks = []
        out = resample(pcm, self._rate, SAMPLE_RATE)
        return out if out.flags.writeable else out.copy()

    def _list_voices(self) -> list[VoiceInfo]:
        self._init()
        arr = self._lib.espeak_ListVoices(None)
        out: list[VoiceInfo] = []
        i = 0
        while arr[i]:
            v = arr[i].contents
            langs: list[str] = []
            p = v.languages
            # languages: repeated (priority byte, NUL-terminated name), ended by a 0 priority byte
            while p and ctypes.c_ubyte.from_address(p).value != 0:
                s = ctypes.string_at(p + 1)
                langs.append(s.decode())
                p += 2 + len(s)
            out.append(VoiceInfo((v.identifier or b"").decode(), (v.name or b"").decode(), tuple(langs)))
            i += 1
        return out
