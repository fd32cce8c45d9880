"""Passive reply XML for one :class:`Outbound` (WeChat's "被动回复用户消息" formats)."""

from __future__ import annotations

from callcenter.chat.model import Outbound
from callcenter.chat.wechat.xmlsafe import Node, build_xml

__all__ = ["passive_reply", "plain_text"]


def plain_text(out: Outbound) -> str:
    """What a text-only rendering shows: the text, and for an article its title, snippet and link."""
    if out.kind == "article":
        parts = [
            str(out.extra.get("title") or out.text),
            str(out.extra.get("snippet") or ""),
            str(out.extra.get("url") or ""),
        ]
        return "\n".join(p for p in parts if p)
    return out.text


def passive_reply(out: Outbound, to_user: str, from_user: str, create_time: int) -> str:
    """``to_user``: the customer's OpenID; ``from_user``: the account's original id (the callback's
    ToUserName). Articles become ``news`` when they have a URL, images ``image`` with a media_id;
    anything else is text."""
    head: list[Node] = [("ToUserName", to_user), ("FromUserName", from_user), ("CreateTime", create_time)]
    if out.kind == "article" and out.extra.get("url"):
        article: list[Node] = [
            ("Title", str(out.extra.get("title") or out.text)),
            ("Description", str(out.extra.get("snippet") or "")),
            ("PicUrl", str(out.extra.get("picurl") or "")),
            ("Url", str(out.extra["url"])),
        ]
        body: list[Node] = [("MsgType", "news"), ("ArticleCount", 1), ("Articles", [("item", article)])]
    elif out.kind == "image" and out.extra.get("media_id"):
        body = [("MsgType", "image"), ("Image", [("MediaId", str(out.extra["media_id"]))])]
    else:
        body = [("MsgType", "text"), ("Content", plain_text(out))]
    return build_xml([*head, *body])
