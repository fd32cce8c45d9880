"""Which texts of a flow are fixed (rendered ahead) and which depend on the call."""

from __future__ import annotations

from pathlib import Path

from callcenter.ivr.loader import load_flow, load_flow_text
from callcenter.ivr.prompts import FixedPrompt, fixed_prompts

FLOWS = Path(__file__).resolve().parents[2] / "ivr_flows"


def test_fixed_texts_are_listed_once_with_their_language_and_templates_are_left_out() -> None:
    flow = load_flow_text(
        """
id: t
language: en-US
start: hello
nodes:
  hello:
    type: say
    text: Hello there.
    next: again
  again:
    type: say
    text: Hello there.
    next: who
  who:
    type: say
    text: You called from ${caller}.
    next: bye
  bye:
    type: hangup
    prompt: {text: Au revoir., language: fr-FR}
""",
        context=None,
    )
    assert fixed_prompts(flow) == [
        FixedPrompt("Hello there.", "en-US", None),
        FixedPrompt("Au revoir.", "fr-FR", None),
    ]


def test_the_sample_hotlines_have_their_welcome_and_menu_fixed() -> None:
    english = {p.text for p in fixed_prompts(load_flow(FLOWS / "hotline_en.yaml"))}
    assert "Thank you for calling Example Company." in english
    assert any(text.startswith("For sales, press 1") for text in english)
    assert not any("${" in text for text in english)
    chinese = fixed_prompts(load_flow(FLOWS / "hotline_zh.yaml"))
    assert chinese and all(p.language == "zh-CN" for p in chinese)
