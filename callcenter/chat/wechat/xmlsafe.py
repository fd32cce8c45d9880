"""Untrusted XML in, well-formed XML out.

Every callback body goes through defusedxml first (no DTD, no entities, no external references), so an
XXE or a billion-laughs body is refused before any other parser (wechatpy's xmltodict) sees it. Replies
are built element by element: text in CDATA sections with ``]]>`` split across two sections (the only
sequence a CDATA section cannot hold) and characters XML 1.0 forbids (§2.2 Char) dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

__all__ = ["BadXml", "Node", "build_xml", "cdata", "parse_fields"]

# XML 1.0 §2.2: Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Node = tuple[str, "str | int | Sequence[Node]"]


class BadXml(ValueError):
    """The body is not XML we accept (malformed, DTD, entities, wrong root); the message says which."""


def parse_fields(body: bytes | str) -> tuple[dict[str, str], Element]:
    """The ``<xml>`` root's simple children as ``{tag: text}`` (nested ones are left to the element)."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BadXml(f"forbidden XML construct ({type(exc).__name__})") from None
    except (ParseError, ValueError) as exc:
        raise BadXml(f"malformed XML ({exc})") from None
    if root.tag != "xml":
        raise BadXml(f"expected an <xml> root, got <{root.tag}>")
    fields = {child.tag: child.text or "" for child in root if len(child) == 0}
    return fields, root


def cdata(text: str) -> str:
    """``text`` as CDATA section(s): ``]]>`` becomes ``]]`` + ``>`` in two sections."""
    clean = _NOT_XML_CHAR.sub("", text)
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _element(tag: str, value: str | int | Sequence[Node]) -> str:
    if not _TAG.match(tag):
        raise ValueError(f"not an element name: {tag!r}")
    if isinstance(value, bool):
        raise TypeError("bool is not an XML value")
    if isinstance(value, int):
        body = str(value)
    elif isinstance(value, str):
        body = cdata(value)
    else:
        body = "".join(_element(t, v) for t, v in value)
    return f"<{tag}>{body}</{tag}>"


def build_xml(nodes: Sequence[Node]) -> str:
    """``<xml>`` with ``nodes`` (tag, value) in order: str → CDATA, int → digits, a sequence → nested."""
    return _element("xml", nodes)
