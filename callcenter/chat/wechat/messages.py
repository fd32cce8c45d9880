"""WeChat message XML (already vetted by defusedxml) → :class:`Inbound`, parsed by wechatpy.

Kinds taken: text, image, voice (``Recognition`` is the text), location, link, video/shortvideo (as
``file``) and the events subscribe (also scan-to-subscribe), unsubscribe and CLICK. Every other event
(VIEW, LOCATION reports, SCAN, job-finish notices …) is only logged and answered ``success``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wechatpy import parse_message
from wechatpy.messages import BaseMessage

from callcenter.chat.model import Inbound, InboundKind
from callcenter.chat.wechat.xmlsafe import BadXml

__all__ = ["Parsed", "dedupe_key", "parse"]


@dataclass(frozen=True, slots=True)
class Parsed:
    """One callback's message: ``inbound`` None for what we only log (``what`` names it)."""

    inbound: Inbound | None
    what: str
    openid: str
    account_id: str  # ToUserName: the account's original id (gh_...), the passive reply's FromUserName
    key: str


def dedupe_key(fields: dict[str, str]) -> str:
    """MsgId for messages; FromUserName + CreateTime for events (they carry no MsgId)."""
    if fields.get("MsgType", "").lower() != "event" and fields.get("MsgId"):
        return f"msg:{fields['MsgId']}"
    return f"event:{fields.get('FromUserName', '')}:{fields.get('CreateTime', '')}"


def _load(xml: str) -> BaseMessage:
    try:
        message = parse_message(xml)
        # touch the typed fields now, so a non-numeric CreateTime/MsgId fails here, not later
        _ = (message.id, message.time)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BadXml(f"not a WeChat message ({type(exc).__name__})") from None
    if message is None:
        raise BadXml("empty message")
    return message


def parse(xml: str, fields: dict[str, str], account: str, received_at: datetime) -> Parsed:
    """Turn one message into an Inbound (or None for events we ignore). Raises BadXml."""
    message = _load(xml)
    openid = str(message.source or "")
    if not openid:
        raise BadXml("no FromUserName")
    key = dedupe_key(fields)
    kind: InboundKind
    media: dict[str, Any] = {}
    what = message.type
    if message.type == "text":
        kind, text = "text", str(message.content or "")
    elif message.type == "image":
        kind, text = "image", ""
        media = {"MediaId": message.media_id, "PicUrl": message.image}
    elif message.type == "voice":
        kind, text = "voice", str(message.recognition or "")
        media = {"MediaId": message.media_id, "Format": message.format}
    elif message.type == "location":
        label = str(message.label or "")
        kind, text = "location", f"{message.location_x},{message.location_y} {label}".strip()
        media = {
            "Label": label,
            "Scale": message.scale,
            "Location_X": message.location_x,
            "Location_Y": message.location_y,
        }
    elif message.type == "link":
        kind, text = "link", f"{message.title or ''} {message.url or ''}".strip()
        media = {"Title": message.title, "Description": message.description, "Url": message.url}
    elif message.type in ("video", "shortvideo"):
        kind, text = "file", ""
        media = {"type": message.type, "MediaId": message.media_id, "ThumbMediaId": message.thumb_media_id}
    elif message.type == "event":
        event = str(message.event or "").lower()
        what = f"event:{event}"
        if event in ("subscribe", "subscribe_scan", "subscribe_scan_product"):
            kind, text = "event", "subscribe"
            media = {"EventKey": fields.get("EventKey", "")}
        elif event == "unsubscribe":
            kind, text = "event", "unsubscribe"
        elif event == "click":
            kind, text = "event", f"CLICK:{message.key or ''}"
            media = {"EventKey": message.key}
        else:
            return Parsed(None, what, openid, str(message.target or ""), key)
    else:
        mtype = fields.get("MsgType", "unknown")
        what = f"event:{fields.get('Event', '')}" if mtype.lower() == "event" else mtype
        return Parsed(None, what, openid, str(message.target or ""), key)
    inbound = Inbound(
        channel="wechat",
        account=account,
        visitor=openid,
        kind=kind,
        text=text,
        received_at=received_at,
        external_id=key,
        media={k: v for k, v in media.items() if v is not None},
    )
    return Parsed(inbound, what, openid, str(message.target or ""), key)
