"""The IVR flows in text mode: a :class:`~callcenter.ivr.control.CallControl` over one conversation.

The node handlers run unchanged; only what "saying" and "hearing" mean differs:

- ``say``/``play`` → a bot message (a recording's fallback text; a recording without text says
  nothing). The prompts of a question and, for a menu, its options ("1 sales, 2 support") go out as one
  message before the reply is awaited.
- a reply made only of keys (``1``, ``1234#``) counts as digits when the question takes digits,
  anything else as speech — so menus match their keys, phrases and ``other_speech`` as for callers.
- no reply within ``chat.reply_timeout_s`` is silence: the node's no-input path (the flows' own
  ``timeout_s`` is a few seconds, meant for a caller on the line).
- ``kb_answer`` → an ``article`` message (title, url, snippet) when the knowledge base is confident;
  otherwise the node's not-found branch (the knowledge base records the gap, as for calls).
- ``record`` (voicemail) → "please type your message", and the text typed is the message.
- ``transfer`` to an agent → the agent's inbox; to a number or SIP URI → a system message with the
  number to call (the conversation then ends as transferred).
- ``enqueue`` → the chat ACD (:mod:`callcenter.chat.routing`) through the conversation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from callcenter.ivr.control import (
    DigitSpec,
    InputResult,
    PromptItem,
    QueueRequest,
    QueueResult,
    RecordResult,
    SpeechSpec,
    TransferResult,
)
from callcenter.ivr.schema import MenuNode
from callcenter.ivr.services import KbAnswer, KnowledgeBase

__all__ = ["ArticleKb", "ChatCallControl", "TextPeer", "menu_options_text"]

_KEYS_RE = re.compile(r"[0-9*#]+")
RECORD_PROMPT = "Please type your message."


class TextPeer(Protocol):
    """What the text control needs from its conversation (the engine's live conversation)."""

    async def bot_says(
        self, text: str, *, kind: str = "text", extra: dict[str, Any] | None = None, speaker: str = "bot"
    ) -> None:
        """Store and deliver one message to the customer."""
        ...

    async def next_reply(self, timeout_s: float) -> str | None:
        """The customer's next text (one already sent and not yet consumed first); None = silence."""
        ...

    async def enqueue(self, request: QueueRequest) -> QueueResult: ...

    async def transfer_to_agent(self, agent: str) -> TransferResult: ...

    async def end(self, reason: str) -> None: ...

    def set_language(self, language: str) -> None: ...


@dataclass(frozen=True)
class _Article:
    article_id: str | None
    title: str
    url: str | None


class ArticleKb:
    """Wraps a knowledge base so answers can go out as articles: remembers each answer's article."""

    def __init__(self, kb: KnowledgeBase, *, url_for: Callable[[str], str] | None = None) -> None:
        self.kb = kb
        self.url_for = url_for or (lambda article_id: f"/api/kb/articles/{article_id}")
        self._answers: dict[str, _Article] = {}

    async def answer(self, question: str, *, language: str) -> KbAnswer | None:
        answer = await self.kb.answer(question, language=language)
        if answer is not None:
            title = ""
            getter = getattr(self.kb, "article", None)
            if answer.article_id is not None and getter is not None:
                try:
                    key: int | str = (
                        int(answer.article_id) if answer.article_id.isdigit() else answer.article_id
                    )
                    article = await getter(key)
                    title = str(getattr(article, "title", "") or "")
                except Exception:  # noqa: BLE001 - the snippet alone is still an answer
                    title = ""
            url = self.url_for(answer.article_id) if answer.article_id is not None else None
            self._answers[answer.text] = _Article(answer.article_id, title, url)
        return answer

    def take(self, text: str) -> _Article | None:
        """The article ``text`` is the answer of (once)."""
        return self._answers.pop(text, None)


def menu_options_text(node: MenuNode) -> str:
    """The options as one line: "1 sales, 2 support, agent" (key and first phrase, or the phrase)."""
    parts = []
    for option in node.options:
        label = option.speech[0] if option.speech else option.next.replace("_", " ")
        parts.append(f"{option.dtmf} {label}" if option.dtmf is not None else label)
    return ", ".join(parts)


class ChatCallControl:
    """A CallControl on a conversation; ``current_node`` names the node being run (menus list their
    options), ``note`` adds the customer's typed message to the flow's transcript (voicemail)."""

    def __init__(
        self,
        peer: TextPeer,
        *,
        reply_timeout_s: float = 300.0,
        current_node: Callable[[], Any] | None = None,
        note: Callable[[str], None] | None = None,
        articles: ArticleKb | None = None,
    ) -> None:
        self.peer = peer
        self.reply_timeout_s = reply_timeout_s
        self.current_node = current_node or (lambda: None)
        self.note = note
        self.articles = articles
        self.ended: str | None = None

    # -- output --------------------------------------------------------------------------------------------

    async def _send_text(self, text: str | None) -> None:
        if not text:
            return
        article = self.articles.take(text) if self.articles is not None else None
        if article is not None:
            extra = {
                "title": article.title,
                "url": article.url,
                "snippet": text,
                "article_id": article.article_id,
            }
            await self.peer.bot_says(text, kind="article", extra=extra)
        else:
            await self.peer.bot_says(text)

    async def _prompts(self, prompts: Sequence[PromptItem]) -> None:
        texts = [p.text for p in prompts if p.text]
        node = self.current_node()
        if isinstance(node, MenuNode):
            texts.append(menu_options_text(node))
        if len(texts) == 1:
            await self._send_text(texts[0])  # may be a KB answer
        elif texts:
            await self.peer.bot_says("\n".join(texts))

    async def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
        await self._send_text(text)

    async def play(self, file: str, *, fallback_text: str | None = None, language: str | None = None) -> None:
        await self._send_text(fallback_text)

    # -- input ---------------------------------------------------------------------------------------------

    async def _input(self, digits: DigitSpec | None) -> InputResult:
        text = await self.peer.next_reply(self.reply_timeout_s)
        if text is None or not text.strip():
            return InputResult("timeout")
        text = text.strip()
        keys = text.replace(" ", "")
        if digits is not None and _KEYS_RE.fullmatch(keys):
            terminated = False
            if digits.terminator and digits.terminator in keys:
                keys, terminated = keys[: keys.index(digits.terminator)], True
            return InputResult("digits", digits=keys[: digits.max_digits], terminated=terminated)
        # words: what a caller says (a question that takes only keys finds them invalid and asks again)
        return InputResult("speech", transcript=text, confidence=1.0)

    async def collect_digits(
        self,
        spec: DigitSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
    ) -> InputResult:
        await self._prompts(prompts)
        return await self._input(spec)

    async def listen(
        self,
        spec: SpeechSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
        digits: DigitSpec | None = None,
    ) -> InputResult:
        await self._prompts(prompts)
        return await self._input(digits)

    async def record(
        self, *, max_s: float, beep: bool = True, terminator: str | None = "#", max_silence_s: float = 5.0
    ) -> RecordResult:
        await self.peer.bot_says(RECORD_PROMPT, speaker="system")
        text = await self.peer.next_reply(self.reply_timeout_s)
        if text is None or not text.strip():
            return RecordResult(None, 0.0, "silence")
        if self.note is not None:
            self.note(text.strip())
        # No audio: the "recording" names the typed message (the transcript carries its text).
        return RecordResult("chat-message", float(max(1, len(text.split()))), "terminator")

    # -- leaving the bot -----------------------------------------------------------------------------------

    async def enqueue(self, request: QueueRequest) -> QueueResult:
        return await self.peer.enqueue(request)

    async def transfer(
        self, target: str, *, timeout_s: float = 30.0, caller_id: str | None = None
    ) -> TransferResult:
        if target.startswith("agent:"):
            return await self.peer.transfer_to_agent(target.removeprefix("agent:"))
        number = target.removeprefix("sip:").removeprefix("tel:").split("@", 1)[0].split(";", 1)[0]
        if not number:
            return TransferResult("failed", "no number to give")
        await self.peer.bot_says(f"Please call us at {number}.", speaker="system")
        return TransferResult("answered", f"told to call {number}")

    async def set_language(self, language: str, voice: str | None = None) -> None:
        self.peer.set_language(language)

    async def hangup(self, reason: str) -> None:
        self.ended = reason
        await self.peer.end(reason)
