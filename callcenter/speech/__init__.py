"""Offline speech for the IVR: TTS with a prompt cache, VAD segmentation, Vosk and Whisper ASR.

Modules: ``base`` (types and engine protocols), ``audio`` (conversions), ``tts`` (espeak-ng),
``cache`` (prompt audio on disk), ``vad`` (webrtcvad / Silero + segmenter), ``phrases`` (phrase-list
matching), ``vosk_engine`` and ``whisper_engine`` (ASR), ``models`` (Vosk model install/remove).
Importing this package loads no model and no native speech library.
"""

from callcenter.speech.base import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AsrEngine,
    AsrResult,
    AsrStream,
    Pcm8k,
    SpeechEnded,
    SpeechError,
    SpeechStarted,
    TtsEngine,
    VoiceActivity,
    Word,
)

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AsrEngine",
    "AsrResult",
    "AsrStream",
    "Pcm8k",
    "SpeechEnded",
    "SpeechError",
    "SpeechStarted",
    "TtsEngine",
    "VoiceActivity",
    "Word",
]
