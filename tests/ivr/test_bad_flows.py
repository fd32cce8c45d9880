"""Every broken flow in bad/ gives exactly the errors its manifest (bad/expected.yaml) lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from callcenter.ivr.loader import FlowContext, FlowLoadError, check_flows, load_flow

BAD = Path(__file__).parent / "bad"
MANIFEST: dict[str, list[str]] = yaml.safe_load((BAD / "expected.yaml").read_text(encoding="utf-8"))
CONTEXT = FlowContext(
    queues=frozenset({"sales", "support", "billing", "general"}),
    skills=frozenset({"english", "mandarin"}),
    intents=frozenset({"order_status", "refund"}),
    schedules=frozenset({"main"}),
    flows=frozenset(),
)


def test_manifest_lists_every_bad_flow() -> None:
    files = {p.name for p in BAD.glob("*.yaml")} - {"expected.yaml"}
    assert files == set(MANIFEST)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bad_flow_reports_its_errors(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    errors = check_flows([name], CONTEXT)
    assert [f"{e.kind}: {e}" for e in errors] == MANIFEST[name]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_loading_a_bad_flow_raises_with_the_same_errors(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    with pytest.raises(FlowLoadError) as info:
        load_flow(name, CONTEXT)
    assert [f"{e.kind}: {e}" for e in info.value.errors] == MANIFEST[name]
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)


def test_every_error_kind_is_covered() -> None:
    kinds = {line.split(":", 1)[0] for lines in MANIFEST.values() for line in lines}
    assert kinds >= {
        "yaml",
        "schema",
        "duplicate-node",
        "duplicate-key",
        "unknown-target",
        "unreachable",
        "loop",
        "missing-recording",
        "unknown-prompt",
        "unknown-queue",
        "unknown-skill",
        "unknown-intent",
        "unknown-schedule",
        "unknown-flow",
    }


def test_names_are_not_checked_when_the_context_does_not_know_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    for name in ("unknown_queue.yaml", "unknown_skill.yaml", "unknown_intent.yaml", "unknown_schedule.yaml"):
        assert check_flows([name]) == []
