"""A date that is none (2024-13-01) in an admin's YAML is a clear, positioned error everywhere YAML is
read — the ivr_yaml fuzz target found PyYAML's ValueError escaping (a crash, and a traceback from
`callcenter config check`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from callcenter.core.config import load_settings
from callcenter.core.errors import ConfigError
from callcenter.core.yamlsafe import safe_load
from callcenter.kb.markdown import ArticleFormatError, parse_markdown


@pytest.mark.parametrize("bad", ["2024-13-01", "2024-02-30", "2024-01-01 25:00:00"])
def test_a_date_that_is_none_is_a_marked_yaml_error(bad: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as info:
        safe_load(f"holidays:\n  - 2024-12-25\n  - {bad}\n")
    assert info.value.problem_mark is not None and info.value.problem_mark.line == 2
    assert "is not a valid date or time" in str(info.value)


def test_good_dates_still_load_as_dates() -> None:
    import datetime

    assert safe_load("d: 2024-02-29") == {"d": datetime.date(2024, 2, 29)}


def test_config_check_names_the_line_of_a_bad_date(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "schedules:\n  main: {timezone: UTC, weekly: {mon-fri: ['09:00-17:00']}, holidays: [2024-13-01]}\n"
    )
    with pytest.raises(ConfigError, match=r"config.yaml:2:.*'2024-13-01' is not a valid date or time"):
        load_settings(config, {})


def test_kb_front_matter_with_a_bad_date_is_refused_with_the_file_name() -> None:
    source = "---\ntitle: Returns\nupdated: 2024-13-01\n---\nBody.\n"
    with pytest.raises(ArticleFormatError, match=r"returns.md: front matter: .*not a valid date or time"):
        parse_markdown(source, default_slug="returns", where="returns.md")
