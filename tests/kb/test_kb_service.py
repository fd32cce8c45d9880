"""KbService: answers with a threshold, gaps grouped and counted, votes and flags, agent assist."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from callcenter.ivr.services import KbAnswer, KnowledgeBase, Services
from callcenter.kb.markdown import ArticleData
from callcenter.kb.repo import KbRepo, article_data
from callcenter.kb.service import KbService
from callcenter.store.db import make_engine

sys.path.insert(0, str(Path(__file__).parents[1] / "ivr"))
from ivr_fakes import Press, ScriptedCall, Speak  # noqa: E402

from callcenter.ivr.engine import CallInfo, FlowRunner  # noqa: E402
from callcenter.ivr.loader import load_flow_text  # noqa: E402


async def test_answer_when_confident(sample_repo: KbRepo) -> None:
    kb: KnowledgeBase = KbService(sample_repo)
    answer = await kb.answer("I forgot my password", language="en-US")
    assert isinstance(answer, KbAnswer)
    assert answer.text.startswith("To reset your password, click Forgot password")
    assert answer.article_id == str(sample_repo.get_article("en-reset-password").id)  # type: ignore[union-attr]
    zh = await kb.answer("我 忘 了 密 码", language="zh-CN")
    assert zh is not None and zh.text.startswith("忘记密码时")
    assert sample_repo.gaps() == []


async def test_unsure_answers_become_counted_grouped_gaps(sample_repo: KbRepo) -> None:
    kb = KbService(sample_repo)
    for question in ["Do you sell gift cards?", "do you sell gift crads", "Gift cards: do you sell them?"]:
        assert await kb.answer(question, language="en") is None
    assert await kb.answer("你们几点上班", language="zh-CN") is None
    assert await kb.answer("what are your opening hours", language="en") is None
    await kb.record_gap("Do you sell gift cards", "en", reason="handoff")
    gaps = await kb.gaps()
    counts = {(g.language, g.example): (g.count, g.reasons) for g in gaps}
    assert counts == {
        ("en", "Do you sell gift cards?"): (4, {"no_answer": 3, "handoff": 1}),
        ("zh", "你们几点上班"): (1, {"no_answer": 1}),
        ("en", "what are your opening hours"): (1, {"no_answer": 1}),
    }
    assert gaps[0].example == "Do you sell gift cards?"  # most asked first
    assert [g.language for g in await kb.gaps("zh-CN")] == ["zh"]


def test_gap_times_are_first_and_last_seen(empty_repo: KbRepo) -> None:
    t1, t2 = datetime(2025, 3, 1, 9, tzinfo=UTC), datetime(2025, 3, 2, 9, tzinfo=UTC)
    empty_repo.record_gap("store opening hours", "en", now=t1)
    gap = empty_repo.record_gap("opening hours of the store?", "en", now=t2)
    assert gap is not None and (gap.count, gap.first_seen, gap.last_seen) == (2, t1, t2)


async def test_not_helpful_votes_flag_an_article_and_an_edit_clears_it(sample_repo: KbRepo) -> None:
    kb = KbService(sample_repo)
    article = sample_repo.get_article("en-invoice")
    assert article is not None and article.id is not None
    await kb.vote(article.id, True, conversation_id="c0")
    for i in range(1, 3):
        assert (await kb.vote(article.id, False, conversation_id=f"c{i}")).flagged is False
    # The same conversation voting again replaces its vote instead of adding one.
    assert (await kb.vote(article.id, False, conversation_id="c2")).not_helpful_count == 2
    flagged = await kb.vote(article.id, False, conversation_id="c3")
    assert (flagged.flagged, flagged.helpful_count, flagged.not_helpful_count) == (True, 1, 3)
    assert [a.slug for a in sample_repo.list_articles(flagged=True)] == ["en-invoice"]
    changed = await kb.vote(str(article.id), True, conversation_id="c3")  # changed their mind
    assert (changed.flagged, changed.helpful_count, changed.not_helpful_count) == (False, 2, 2)
    await kb.vote(article.id, False, conversation_id="c3")
    await kb.vote(article.id, False, conversation_id="c4")
    data = sample_repo.get_article("en-invoice")
    assert data is not None and data.flagged

    edited = article_data(data)
    edited = type(edited)(
        **{**edited.__dict__, "body": edited.body + "\nInvoices can also be sent by post.\n"}
    )
    saved, changed_flag = sample_repo.save_article(edited, author="editor")
    assert changed_flag and not saved.flagged and saved.not_helpful_count == 0 and saved.version == 2


async def test_suggest_reads_the_end_of_a_running_transcript(sample_repo: KbRepo) -> None:
    kb = KbService(sample_repo)
    transcript = (
        "hello thanks for calling how can I help. hi I ordered a jacket last week. okay let me look. "
        "it said delivered but the parcel never arrived and nobody has it"
    )
    hits = await kb.suggest(transcript, "en")
    assert 1 <= len(hits) <= 3 and hits[0].slug == "en-delivery-problem"
    assert await kb.suggest("", "en") == []
    zh = await kb.suggest("您好请问有什么可以帮您。我上周买的衣服想退货，怎么操作", "zh-CN")
    assert zh[0].slug == "zh-return-item"


async def test_open_loads_the_sample_once(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'kb.db'}")
    kb = await KbService.open(engine)
    assert kb.repo.count_articles() == 20
    kb.repo.save_article(ArticleData("extra", "en", "Extra", "Extra.\n", status="draft"), author="t")
    again = await KbService.open(engine)  # a second start: the sample is not loaded twice
    assert again.repo.count_articles() == 21
    engine.dispose()


async def test_kb_answer_node_with_the_real_service(sample_repo: KbRepo) -> None:
    flow = load_flow_text(
        """\
id: t
start: a
language: en-US
nodes:
  a:
    type: kb_answer
    ask: What is your question?
    helped: {prompt: "Did that help? Press 1 for yes."}
    next: b
    on_unresolved: c
  b: {type: hangup, reason: resolved}
  c: {type: hangup, reason: unresolved}
"""
    )
    services = Services(kb=KbService(sample_repo))
    call = ScriptedCall(Speak("I forgot my password"), Press("1"))
    result = await FlowRunner(flow, call, services, call=CallInfo("c1", "+100", "100")).run()
    assert result.reason == "resolved"
    assert result.variables["kb_article"] == str(sample_repo.get_article("en-reset-password").id)  # type: ignore[union-attr]
    call = ScriptedCall(Speak("do you sell gift cards"))
    result = await FlowRunner(flow, call, services, call=CallInfo("c2", "+100", "100")).run()
    assert result.reason == "unresolved"
    assert [g.example for g in sample_repo.gaps()] == ["do you sell gift cards"]
