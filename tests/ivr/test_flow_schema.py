"""Flow models: node types, strictness, round trips, JSON Schema, opening hours."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from callcenter.ivr.loader import load_flow, load_flow_text
from callcenter.ivr.schema import (
    NODE_TYPES,
    CollectNode,
    Flow,
    MenuNode,
    QueueNode,
    SayNode,
    Schedule,
    Speech,
    flow_json_schema,
)

ROOT = Path(__file__).parents[2]
FLOWS = Path(__file__).parent / "flows"
ISSUE_TYPES = (
    "say play menu collect intent branch set http hours language kb_answer ticket queue transfer voicemail "
    "survey goto subflow hangup"
).split()


def test_every_node_type_of_the_issue_exists() -> None:
    assert sorted(NODE_TYPES) == sorted(ISSUE_TYPES)


def test_the_all_nodes_flow_uses_every_type() -> None:
    used = {n.type for f in ("all_nodes.yaml", "routing.yaml") for n in load_flow(FLOWS / f).nodes.values()}
    assert used == set(ISSUE_TYPES)


@pytest.mark.parametrize(
    "path",
    [
        FLOWS / "all_nodes.yaml",
        FLOWS / "routing.yaml",
        ROOT / "ivr_flows/hotline_en.yaml",
        ROOT / "ivr_flows/hotline_zh.yaml",
    ],
    ids=lambda p: p.name,
)
def test_round_trip_through_yaml(path: Path) -> None:
    flow = load_flow(path)
    text = yaml.safe_dump(flow.to_data(), allow_unicode=True, sort_keys=False)
    again = load_flow_text(text, source=str(path), base_dir=path.parent)
    assert again == flow
    assert again.to_data() == flow.to_data()
    # and through JSON (the API's format)
    assert Flow.model_validate_json(flow.model_dump_json()).with_source(flow.source) == flow


def test_to_data_drops_defaults_but_keeps_node_types() -> None:
    data = load_flow(FLOWS / "routing.yaml").to_data()
    assert data["nodes"]["sorry"] == {"type": "goto", "next": "done"}
    assert list(data["nodes"]["queue"])[0] == "type"
    assert "retries" not in json.dumps(data)


def test_prompt_shorthands() -> None:
    menu = MenuNode.model_validate(
        {
            "prompt": "Press 1",
            "options": [{"dtmf": 1, "next": "a"}],
            "no_input": {"recording": "x", "text": "?"},
        }
    )
    assert menu.prompt == Speech(text="Press 1")
    assert menu.options[0].dtmf == "1"  # YAML's number becomes the key
    assert menu.no_input == Speech(recording="x", text="?")
    flow = Flow.model_validate(
        {
            "id": "f",
            "start": "a",
            "prompts": {"hi": "hi.wav"},
            "nodes": {"a": {"type": "say", "recording": "hi"}},
        }
    )
    assert flow.prompts["hi"].file == "hi.wav" and flow.prompts["hi"].text is None


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (SayNode, {"text": True}),  # YAML yes/no is not text
        (SayNode, {}),  # neither text nor recording
        (SayNode, {"text": "hi", "colour": "red"}),
        (MenuNode, {"prompt": "p", "options": [], "timeout_s": 5}),
        (MenuNode, {"prompt": "p", "options": [{"dtmf": "1", "next": "a"}], "timeout_s": "5"}),
        (MenuNode, {"prompt": "p", "options": [{"dtmf": "1", "next": "a"}], "retries": True}),
        (MenuNode, {"prompt": 5, "options": [{"dtmf": "1", "next": "a"}]}),
        (CollectNode, {"prompt": "p", "into": "x", "next": "a", "min_digits": 5, "max_digits": 4}),
        (CollectNode, {"prompt": "p", "into": "x", "next": "a", "pattern": "[0-9"}),
        (CollectNode, {"prompt": "p", "into": "x", "next": "a", "phrases": ["yes"]}),
        (QueueNode, {"queue": "q", "skills": {"english": 6}}),
        (QueueNode, {"queue": "q", "priority_rules": [{"when": "vip ==", "priority": 1}]}),
    ],
)
def test_strict_models_refuse(model: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_queue_skills_may_be_a_list() -> None:
    assert QueueNode.model_validate({"queue": "q", "skills": ["english", "billing"]}).skills == {
        "english": 1,
        "billing": 1,
    }


def test_json_schema_describes_every_node_type() -> None:
    schema = flow_json_schema()
    assert schema["title"] == "callcenter IVR flow"
    nodes = schema["properties"]["nodes"]["additionalProperties"]
    assert set(nodes["discriminator"]["mapping"]) == set(ISSUE_TYPES)
    for name in ISSUE_TYPES:
        definition = schema["$defs"][NODE_TYPES[name].__name__]
        assert definition["additionalProperties"] is False
        assert definition["properties"]["type"]["const"] == name
    # prompts may be plain text or a mapping
    menu_prompt = schema["$defs"]["MenuNode"]["properties"]["prompt"]
    assert {"type": "string"} in menu_prompt["anyOf"]
    json.dumps(schema)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2025-06-02T09:00:00+02:00", True),  # Monday 09:00 in Berlin
        ("2025-06-02T06:59:00+00:00", False),  # 08:59 Berlin
        ("2025-06-02T15:30:00+00:00", True),  # 17:30 Berlin, the last minute
        ("2025-06-02T15:31:00+00:00", False),
        ("2025-06-07T11:00:00+02:00", True),  # Saturday
        ("2025-06-07T15:00:00+02:00", False),
        ("2025-06-08T11:00:00+02:00", False),  # Sunday
        ("2025-12-25T10:00:00+01:00", False),  # a Thursday, but a holiday
        ("2025-12-24T23:30:00+00:00", False),  # 00:30 on the 25th in Berlin: holiday there
    ],
)
def test_schedule(when: str, expected: bool) -> None:
    schedule = Schedule.model_validate(
        {
            "timezone": "Europe/Berlin",
            "weekly": {"mon-fri": ["09:00-17:30"], "sat": ["10:00-14:00"]},
            "holidays": ["2025-12-25"],
        }
    )
    assert schedule.is_open(_at(when)) is expected


def test_schedule_without_weekly_hours_is_always_open_but_for_holidays() -> None:
    schedule = Schedule.model_validate({"holidays": ["2025-01-01"]})
    assert schedule.is_open(datetime(2025, 6, 8, 3, 0, tzinfo=UTC))
    assert not schedule.is_open(datetime(2025, 1, 1, 12, 0, tzinfo=UTC))


def test_schedule_day_ranges_wrap_and_list() -> None:
    schedule = Schedule.model_validate({"weekly": {"fri-mon": ["00:00-24:00"], "wed,thu": ["12:00-13:00"]}})
    opened = [schedule.is_open(datetime(2025, 6, d, 12, 30, tzinfo=UTC)) for d in range(2, 9)]  # Mon..Sun
    assert opened == [True, False, True, True, True, True, True]
