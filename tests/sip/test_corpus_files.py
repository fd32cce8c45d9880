"""The recorded message corpus is itself sane: files and manifests agree, bytes are intact.

These tests check the fixtures, not the parser: a damaged checkout (CRLF conversion, a truncated
file, an edited manifest) must fail here rather than make parser tests pass or fail for the wrong reason.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from corpus import EXPECTS, FOLDERS, MESSAGES_DIR, CorpusCase, load_all, load_corpus, load_manifest

ALL = load_all()
UDP = [c for c in ALL if c.transport == "udp"]
TCP = [c for c in ALL if c.transport == "tcp"]
WITH_DIGEST = [c for c in ALL if "digest" in c.facts]

# Every message RFC 4475 refers to: §3.1.1.1-13, §3.1.2.1-19, §3.2.1, §3.3.1-15, §3.4.1.
RFC4475_SECTIONS = (
    [f"3.1.1.{i}" for i in range(1, 14)]
    + [f"3.1.2.{i}" for i in range(1, 20)]
    + ["3.2.1"]
    + [f"3.3.{i}" for i in range(1, 16)]
    + ["3.4.1"]
)


def _split_head(data: bytes) -> tuple[bytes, bytes | None]:
    """(head, rest after the empty line); rest is None when the head never ends."""
    end = data.find(b"\r\n\r\n")
    return (data, None) if end < 0 else (data[:end], data[end + 4 :])


def _content_lengths(head: bytes) -> list[bytes]:
    """Raw Content-Length values (long or compact name, any case, LWS before the colon)."""
    values = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and not line[:1].isspace() and name.strip().lower() in (b"content-length", b"l"):
            values.append(value.strip())
    return values


def _declared(values: list[bytes]) -> Any:
    """Manifest form of the declared Content-Length: int, raw string, list, or None."""
    parsed: list[Any] = [int(v) if v.isdigit() else v.decode() for v in values]
    if not parsed:
        return None
    return parsed[0] if len(parsed) == 1 else parsed


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_manifest_entry_has_a_file_and_every_file_an_entry(folder: str) -> None:
    entries = load_manifest(folder)
    listed = [e["file"] for e in entries]
    on_disk = sorted(p.name for p in (MESSAGES_DIR / folder).glob("*.dat"))
    assert sorted(listed) == on_disk
    assert len({e["name"] for e in entries}) == len(entries), "duplicate case names"


def test_case_names_are_unique_across_folders() -> None:
    assert len({c.name for c in ALL}) == len(ALL)


def test_rfc4475_covers_every_referenced_message_once() -> None:
    sections = [c.expectations["section"] for c in load_corpus("rfc4475")]
    assert sorted(sections) == sorted(RFC4475_SECTIONS)


@pytest.mark.parametrize("case", ALL, ids=str)
def test_bytes_match_recorded_sha256(case: CorpusCase) -> None:
    # Catches line-ending conversion or any edit of a byte-exact capture.
    assert hashlib.sha256(case.raw).hexdigest() == case.expectations["sha256"]


@pytest.mark.parametrize("case", ALL, ids=str)
def test_manifest_entry_is_well_formed(case: CorpusCase) -> None:
    e = case.expectations
    assert case.expect in EXPECTS
    assert case.kind in ("request", "response")
    assert case.transport in ("udp", "tcp")
    assert e.get("why"), "every case says why it is there"
    assert case.code is None or 100 <= case.code <= 699
    assert all(100 <= c <= 699 for c in e.get("alt_codes", []))
    assert case.expect == "parse" or e.get("fault") in ("framing", "start_line", "header", "semantic")
    assert len(case.all_facts) == case.message_count


@pytest.mark.parametrize("case", ALL, ids=str)
def test_start_line_matches_kind_and_facts(case: CorpusCase) -> None:
    start = case.raw.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    assert start.startswith(b"SIP/") == (case.kind == "response")
    facts = case.facts
    if "method" in facts:
        assert start.split(b" ", 1)[0] == facts["method"].encode()
    if "status" in facts:
        assert start.split(b" ")[1] == str(facts["status"]).encode()


@pytest.mark.parametrize("case", ALL, ids=str)
def test_head_uses_crlf_line_ends_only(case: CorpusCase) -> None:
    head, _ = _split_head(case.raw)
    assert b"\r\n" in case.raw
    assert re.search(rb"(?<!\r)\n", head) is None, "bare LF in the header section"
    assert re.search(rb"\r(?!\n)", head) is None, "bare CR in the header section"


@pytest.mark.parametrize("case", ALL, ids=str)
def test_head_is_terminated_unless_declared(case: CorpusCase) -> None:
    _, rest = _split_head(case.raw)
    assert (rest is None) == bool(case.expectations.get("unterminated_head"))


@pytest.mark.parametrize("case", UDP, ids=str)
def test_content_length_and_body_octets_as_declared(case: CorpusCase) -> None:
    head, rest = _split_head(case.raw)
    body = rest if rest is not None else b""
    declared = _declared(_content_lengths(head))
    assert declared == case.facts.get("content_length")
    assert (None if rest is None else len(rest)) == case.expectations["body_bytes"]
    # A discrepancy the RFC intends is documented, never silently "fixed"; any other is damage.
    consistent = declared is None or declared == len(body)
    assert consistent != bool(case.expectations.get("length_mismatch")), (declared, len(body))
    if consistent and "body_length" in case.facts:
        assert case.facts["body_length"] == len(body)


@pytest.mark.parametrize("case", TCP, ids=str)
def test_stream_read_frames_into_the_declared_messages(case: CorpusCase) -> None:
    data = case.raw
    leading = len(data) - len(data.lstrip(b"\r\n"))
    assert leading == case.expectations.get("leading_crlf_bytes", 0)
    data = data[leading:]
    methods = []
    while data:
        head, rest = _split_head(data)
        assert rest is not None, "truncated message in stream"
        (length,) = _content_lengths(head)  # a stream message needs exactly one Content-Length
        methods.append(head.split(b" ", 1)[0].decode())
        data = rest[int(length) :]
    expected = [f.get("method", "SIP/2.0") for f in case.all_facts]
    assert methods == expected


@pytest.mark.parametrize("case", ALL, ids=str)
def test_call_id_fact_occurs_in_the_bytes(case: CorpusCase) -> None:
    for facts in case.all_facts:
        if isinstance(facts.get("call_id"), str):
            assert facts["call_id"].encode() in case.raw


@pytest.mark.parametrize("case", WITH_DIGEST, ids=str)
def test_digest_credentials_verify_with_the_recorded_password(case: CorpusCase) -> None:
    d = case.facts["digest"]
    algo = {"MD5": "md5", "SHA-256": "sha256"}[d["algorithm"]]

    def h(text: str) -> str:
        return hashlib.new(algo, text.encode()).hexdigest()

    # RFC 7616 §3.4.1 with qop=auth.
    ha1 = h(f"{d['username']}:{d['realm']}:{d['password']}")
    ha2 = h(f"{d['method']}:{d['uri']}")
    assert h(f"{ha1}:{d['nonce']}:{d['nc']}:{d['cnonce']}:{d['qop']}:{ha2}") == d["response"]
    for value in (d["response"], d["nonce"], d["cnonce"], d["uri"], d["username"]):
        assert value.encode() in case.raw
