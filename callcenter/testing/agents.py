"""An agent on a real softphone for end-to-end tests: the account added through the CLI, baresip
registered with it (auto-answer by default), its microphone a tone or given audio."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from callcenter.testing.baresip import Baresip, write_wav
from callcenter.testing.server import ServerProcess

__all__ = ["agent_phone"]


def agent_phone(
    server: ServerProcess,
    work_root: Path,
    name: str,
    skills: str,
    *,
    tone_hz: float = 600.0,
    mic: np.ndarray | None = None,
    answer: bool = True,
    life_s: int = 70,
) -> Baresip:
    """Add agent ``name`` (password ``pw-<name>``), start its baresip in ``work_root/name`` playing
    ``mic`` (8 kHz int16) or a ``tone_hz`` sine, and wait until the server has it available."""
    server.cli("agents", "add", name, "--password", f"pw-{name}", "--skills", skills)
    mode = "auto" if answer else "manual"
    account = f"<sip:{name}@127.0.0.1:{server.sip_port}>;auth_pass=pw-{name};answermode={mode};regint=600"
    work = work_root / name
    work.mkdir()
    wav = work / "mic.wav"
    if mic is None:
        write_wav(wav, life_s, tone_hz)
    else:
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(mic.astype("<i2").tobytes())
    phone = Baresip(work, account, audio_wav=wav, record_dir=work / "rec", life_s=life_s)
    phone.start()
    server.wait_for_event("agent_registered", username=name, timeout=15)
    server.wait_for_event("agent_state", agent=name, state="available", timeout=15)
    return phone
