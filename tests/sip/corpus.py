"""Loader for the recorded SIP message corpus in ``tests/sip/messages/`` (format: messages/README.md).

Parser tests parametrise over it::

    from corpus import load_corpus

    @pytest.mark.parametrize("case", load_corpus("rfc4475"), ids=str)
    def test_torture(case): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MESSAGES_DIR = Path(__file__).resolve().parent / "messages"
FOLDERS = ("rfc4475", "realworld")
EXPECTS = ("parse", "parse_then_400", "reject")


@dataclass(frozen=True, eq=False)
class CorpusCase:
    """One recorded file: its exact bytes and what its manifest entry says about them."""

    name: str
    raw: bytes = field(repr=False)
    expectations: dict[str, Any] = field(repr=False)
    path: Path

    def __str__(self) -> str:  # pytest ids
        return self.name

    @property
    def expect(self) -> str:
        """``parse`` | ``parse_then_400`` | ``reject``."""
        return str(self.expectations["expect"])

    @property
    def kind(self) -> str:
        """``request`` | ``response``."""
        return str(self.expectations["kind"])

    @property
    def transport(self) -> str:
        """``udp``: the file is one datagram; ``tcp``: the file is one stream read."""
        return str(self.expectations.get("transport", "udp"))

    @property
    def code(self) -> int | None:
        """The response the RFC says the receiving UAS sends, or None."""
        code = self.expectations.get("code")
        return None if code is None else int(code)

    @property
    def facts(self) -> dict[str, Any]:
        """Assertable facts about the first message in the file."""
        facts: dict[str, Any] = self.expectations.get("facts") or {}
        return facts

    @property
    def all_facts(self) -> list[dict[str, Any]]:
        """Facts for every message the file holds, in order (more than one only for tcp reads)."""
        return [self.facts, *(self.expectations.get("next_facts") or [])]

    @property
    def message_count(self) -> int:
        return int(self.expectations.get("message_count", 1))


def _folder(folder: str | Path) -> Path:
    path = Path(folder)
    return path if path.is_absolute() else MESSAGES_DIR / path


def load_manifest(folder: str | Path) -> list[dict[str, Any]]:
    """The raw manifest entries of a corpus folder, in file order."""
    data = yaml.safe_load((_folder(folder) / "manifest.yaml").read_text(encoding="utf-8"))
    cases = data["cases"] if isinstance(data, dict) else None
    if not isinstance(cases, list):
        raise ValueError(f"{folder}: manifest.yaml has no 'cases' list")
    return cases


def load_corpus(folder: str | Path) -> list[CorpusCase]:
    """Every case of a corpus folder (``"rfc4475"``, ``"realworld"`` or a path), in manifest order.

    Raises if an entry names a missing file, a name repeats, or ``expect`` is not a known value, so a
    damaged corpus fails loudly instead of silently testing less.
    """
    base = _folder(folder)
    seen: set[str] = set()
    out: list[CorpusCase] = []
    for entry in load_manifest(base):
        name = str(entry["name"])
        if name in seen:
            raise ValueError(f"{base}: duplicate case name {name!r}")
        seen.add(name)
        if entry.get("expect") not in EXPECTS:
            raise ValueError(f"{base}: case {name!r} has unknown expect {entry.get('expect')!r}")
        path = base / str(entry.get("file", f"{name}.dat"))
        out.append(CorpusCase(name=name, raw=path.read_bytes(), expectations=entry, path=path))
    return out


def load_all() -> list[CorpusCase]:
    """All folders together (names are unique across folders)."""
    return [case for folder in FOLDERS for case in load_corpus(folder)]
