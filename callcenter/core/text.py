"""Text from the wire made safe to store: the SIP parser keeps undecodable bytes as lone surrogates
(``surrogateescape``) so nothing is lost in transit, but a database or JSON document takes only real
Unicode. ``clean_text`` turns each such byte into U+FFFD (and drops NULs, which PostgreSQL refuses in
text); ``clean_json`` does it throughout a JSON-like value."""

from __future__ import annotations

from typing import Any

__all__ = ["clean_json", "clean_text"]


def clean_text(value: str) -> str:
    if value.isascii():
        return value.replace("\x00", "") if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "")


def clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value
