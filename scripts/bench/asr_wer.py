"""Word error rate of Whisper tiny.en on phone-quality real human speech.

The corpus is tests/speech/corpus: recordings of real people from registry packages (Asterisk's IVR
prompts, a LibriVox reading and CMU AN4 / pocketsphinx test utterances; SOURCES.md lists each), stored
as 8 kHz G.711 μ-law — what a PCMU call leg delivers. Each file is μ-law decoded and handed to
``WhisperEngine.transcribe`` exactly as the IVR hands it a caller's finished utterance.

Normalisation, applied to reference and hypothesis alike before scoring (``normalize``):
lower-case; hyphens and slashes become spaces; other punctuation is removed except an apostrophe
inside a word ("that's", "i'm" stay as they are: a contraction against its expansion counts as an
error); numbers written with digits become the words a speaker says ("1" → "one", "10" → "ten",
"1,000" → "one thousand") since the references spell numbers both ways; "mr"/"mrs"/"dr" become
"mister"/"missus"/"doctor", "ok" becomes "okay". WER = (substitutions + deletions + insertions) /
reference words, from a word-level Levenshtein alignment, totalled over the corpus.

    .venv/bin/python scripts/bench/asr_wer.py [--beam 1] [--only PREFIX] [--show-all]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from callcenter.media import g711
from callcenter.speech.base import Pcm8k
from callcenter.speech.whisper_engine import WhisperEngine

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "speech" / "corpus"

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREV = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay"}


def number_words(n: int) -> str:
    """English words for 0 <= n < 10**9 ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise ValueError(n)  # pragma: no cover


def normalize(text: str) -> list[str]:
    """The words of ``text`` after the normalisation described in the module docstring."""
    t = text.lower().replace("’", "'")
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)  # 1,000 → 1000
    t = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} " if len(m.group()) < 10 else m.group(), t)
    t = re.sub(r"[-/]", " ", t)
    t = re.sub(r"[^a-z0-9' ]", " ", t)
    words = [w.strip("'") for w in t.split()]
    return [_ABBREV.get(w, w) for w in words if w]


@dataclass(frozen=True, slots=True)
class Errors:
    sub: int
    dele: int
    ins: int
    ref_words: int

    @property
    def edits(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        return self.edits / self.ref_words if self.ref_words else float(self.ins > 0)

    def __add__(self, other: Errors) -> Errors:
        return Errors(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins,
                      self.ref_words + other.ref_words)


def align(ref: list[str], hyp: list[str]) -> Errors:
    """Minimum-edit word alignment; among equal-cost alignments the counts of one of them."""
    # cost[j] = (edits, sub, del, ins) for ref[:i] vs hyp[:j]; tuples compare on edits first.
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            e, s, d, n = prev[j - 1]
            same = ref[i - 1] == hyp[j - 1]
            diag = (e + (not same), s + (not same), d, n)
            e, s, d, n = prev[j]
            up = (e + 1, s, d + 1, n)
            e, s, d, n = cur[j - 1]
            left = (e + 1, s, d, n + 1)
            cur.append(min(diag, up, left))
        prev = cur
    _, s, d, n = prev[len(hyp)]
    return Errors(s, d, n, len(ref))


@dataclass(frozen=True, slots=True)
class Item:
    path: Path
    reference: str


def load_corpus(corpus: Path = CORPUS) -> list[Item]:
    """The corpus's ``references.tsv`` rows (file relative to the corpus folder, tab, reference)."""
    items: list[Item] = []
    for line in (corpus / "references.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, ref = line.partition("\t")
        items.append(Item(corpus / name, ref.strip()))
    return items


def phone_audio(item: Item) -> Pcm8k:
    """The file's 8 kHz μ-law decoded to linear PCM, as the server's media layer hands it on."""
    return g711.ulaw_decode(item.path.read_bytes())


@dataclass(frozen=True, slots=True)
class Scored:
    item: Item
    hypothesis: str
    errors: Errors
    seconds: float  # audio duration


async def score(engine: WhisperEngine, items: list[Item]) -> list[Scored]:
    out: list[Scored] = []
    for item in items:
        pcm = phone_audio(item)
        res = await engine.transcribe(pcm)
        out.append(Scored(item, res.raw_text, align(normalize(item.reference), normalize(res.raw_text)),
                          len(pcm) / 8000))
    return out


def total(scored: list[Scored]) -> Errors:
    acc = Errors(0, 0, 0, 0)
    for s in scored:
        acc = acc + s.errors
    return acc


async def _main(args: argparse.Namespace) -> None:
    items = [i for i in load_corpus() if i.path.name.startswith(args.only or "")]
    engine = WhisperEngine(beam_size=args.beam, cpu_threads=args.threads)
    await engine.load()
    t0, c0 = time.perf_counter(), time.process_time()
    scored = await score(engine, items)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    engine.close()
    print(f"{'file':44} {'words':>5} {'S':>3} {'D':>3} {'I':>3} {'WER':>6}")
    for s in scored:
        e = s.errors
        print(f"{s.item.path.name:44} {e.ref_words:5d} {e.sub:3d} {e.dele:3d} {e.ins:3d} {e.wer:6.1%}")
        if e.edits or args.show_all:
            print(f"    ref: {' '.join(normalize(s.item.reference))}")
            print(f"    hyp: {' '.join(normalize(s.hypothesis))}")
    t = total(scored)
    audio = sum(s.seconds for s in scored)
    speakers = {s.item.path.name.split("_")[0] for s in scored}
    print(f"\nTOTAL {len(scored)} files, {len(speakers)} sources, {t.ref_words} words, {audio:.0f} s audio: "
          f"S {t.sub} D {t.dele} I {t.ins}  WER {t.wer:.2%}  (target <= 10 %)")
    print(f"decode: {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / audio:.2f} CPU-s per audio second), "
          f"beam {args.beam}, {args.threads} threads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beam", type=int, default=1, help="beam size (the engine's default: 1, greedy)")
    ap.add_argument("--threads", type=int, default=2, help="CTranslate2 threads")
    ap.add_argument("--only", default="", help="only files whose name starts with this")
    ap.add_argument("--show-all", action="store_true", help="print ref/hyp for every file, not just errors")
    asyncio.run(_main(ap.parse_args()))


if __name__ == "__main__":
    main()
