"""Rebuild the real-speech corpus (audio/*.ulaw, references.tsv) from registry packages.

Nothing here is downloaded from the web: the two inputs come from package registries.

    mkdir -p /tmp/corpus-src && cd /tmp/corpus-src
    pip download --no-deps --no-binary :all: pocketsphinx==5.1.1 -d .
    apt-get download asterisk-core-sounds-en=1.6.1-1 asterisk-core-sounds-en-wav=1.6.1-1
    for d in *.deb; do dpkg-deb -x "$d" deb; done
    .venv/bin/python tests/speech/corpus/build_corpus.py \\
        --pocketsphinx /tmp/corpus-src/pocketsphinx-5.1.1.tar.gz --asterisk /tmp/corpus-src/deb

Every file is stored as raw 8 kHz G.711 μ-law (what a PCMU call leg delivers): 16 kHz sources are
resampled with soxr HQ first. The Asterisk prompts are chosen by a fixed rule decided before any
recognition was run (see ``_asterisk_rows``), not by how well a recogniser does on them.
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np

from callcenter.media import g711
from callcenter.speech.audio import read_wav, resample

HERE = Path(__file__).resolve().parent
PS_DATA = "pocketsphinx-5.1.1/test/data"
AST_SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
AST_TEXT = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
# Prompts whose shipped transcript is not a plain rendering of the words: a misspelt reference
# ("Un-indentified ... witheld") would count as recogniser errors.
AST_EXCLUDE = {"unidentified-no-callback"}
AST_MIN_WORDS, AST_MAX_SECONDS, AST_STEP = 8, 12.0, 3


def _pcm16k_to_ulaw(pcm: np.ndarray, rate: int) -> bytes:
    return g711.ulaw_encode(resample(pcm, rate, 8000))


def _pocketsphinx(sdist: Path) -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    with tarfile.open(sdist) as tar:

        def read(name: str) -> bytes:
            f = tar.extractfile(f"{PS_DATA}/{name}")
            assert f is not None, name
            return f.read()

        for n in (870, 880, 890, 920, 930):
            stem = f"sense_and_sensibility_01_austen_64kb-0{n}"
            pcm, rate = read_wav(read(f"librivox/{stem}.wav"))
            text = read(f"librivox/{stem}.txt").decode().strip()
            out.append((f"librivox_{n:04d}", _pcm16k_to_ulaw(pcm, rate), text))
        # cards.transcription lines: "<s> ten of clubs  </s> (001)"
        for line in read("cards/cards.transcription").decode().splitlines():
            words, _, fid = line.rpartition("(")
            fid = fid.strip(") ")
            text = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
            pcm, rate = read_wav(read(f"cards/{fid}.wav"))
            out.append((f"an4_cards_{fid}", _pcm16k_to_ulaw(pcm, rate), text))
        # goforward.raw: 16 kHz 16-bit little-endian; its transcript is what pocketsphinx's unit tests
        # (test_simple.c, test_fsg.c, ...) expect.
        raw = np.frombuffer(read("goforward.raw"), dtype="<i2").astype(np.int16)
        out.append(("goforward", _pcm16k_to_ulaw(raw, 16000), "go forward ten meters"))
    return out


def _asterisk_rows(root: Path) -> list[tuple[str, str]]:
    """Every ``AST_STEP``-th prompt (sorted by name) with at least ``AST_MIN_WORDS`` words and at
    most ``AST_MAX_SECONDS`` of audio, skipping non-speech entries ("[beep]"), fragments ("...to
    mute"), and texts with symbols a speaker does not say as written ("*", "#", "www.")."""
    rows: list[tuple[str, str]] = []
    text = gzip.decompress((root / AST_TEXT).read_bytes()).decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith(";") or ":" not in line:
            continue
        name, _, ref = line.partition(":")
        name, ref = name.strip(), " ".join(ref.split())
        wav = root / AST_SOUNDS / f"{name}.wav"
        if not wav.is_file() or name in AST_EXCLUDE or len(ref.split()) < AST_MIN_WORDS:
            continue
        if any(s in ref for s in ("[", "...", "*", "#", "www.")):
            continue
        if (wav.stat().st_size - 44) / 16000 > AST_MAX_SECONDS:
            continue
        rows.append((name, ref))
    rows.sort()
    return rows[::AST_STEP]


def _asterisk(root: Path) -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    for name, ref in _asterisk_rows(root):
        pcm, rate = read_wav(root / AST_SOUNDS / f"{name}.wav")
        assert rate == 8000, name
        out.append((f"asterisk_{name.replace('/', '_')}", g711.ulaw_encode(pcm), ref))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pocketsphinx", type=Path, required=True, help="pocketsphinx-5.1.1.tar.gz (sdist)")
    ap.add_argument("--asterisk", type=Path, required=True,
                    help="folder the two .deb files were unpacked into")
    args = ap.parse_args()
    items = _asterisk(args.asterisk) + _pocketsphinx(args.pocketsphinx)
    audio = HERE / "audio"
    audio.mkdir(exist_ok=True)
    refs = io.StringIO()
    refs.write("# file\treference (exact text shipped with the recording; see SOURCES.md)\n")
    for stem, ulaw, text in items:
        (audio / f"{stem}.ulaw").write_bytes(ulaw)
        refs.write(f"audio/{stem}.ulaw\t{text}\n")
    (HERE / "references.tsv").write_text(refs.getvalue())
    seconds = sum(len(u) for _, u, _ in items) / 8000
    words = sum(len(t.split()) for _, _, t in items)
    print(f"{len(items)} files, {words} words, {seconds:.1f} s of audio")


if __name__ == "__main__":
    main()
