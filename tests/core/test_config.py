from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from callcenter import __version__
from callcenter.core.config import ConfigError, Settings, load_settings

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(
    tmp_path: Path,
    yaml_text: str | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> str:
    config = None
    if yaml_text is not None:  # in a subfolder: the working directory keeps no ./config.yaml
        (tmp_path / "etc").mkdir(exist_ok=True)
        config = write(tmp_path / "etc" / "config.yaml", yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(config, overrides or {}, env=env or {})
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(None, {}, env={})
    assert settings.sip.port == 5060
    assert settings.sip.host == "0.0.0.0" and settings.sip.host_v6 == "::"
    assert settings.sip.transports == ["udp", "tcp"]
    assert settings.sip.user_agent == f"callcenter/{__version__}"
    assert settings.calls.ring_s == 0
    assert settings.http.port == 8080
    assert (settings.media.rtp_port_min, settings.media.rtp_port_max) == (10000, 20000)
    assert settings.calls.demo_hangup_after_s == 10
    assert settings.log.format == "json"
    assert settings.db_url == "sqlite:///data/callcenter.db"


def test_repo_config_yaml_holds_exactly_the_defaults_and_names_every_key() -> None:
    assert load_settings(REPO_CONFIG, {}, env={}) == Settings()
    text = REPO_CONFIG.read_text()
    for name, field in Settings.model_fields.items():
        assert re.search(rf"^{name}:", text, re.M), name
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for key in sub.model_fields:
                assert re.search(rf"^  #? ?{key}:", text, re.M), f"{name}.{key} missing from config.yaml"


YAML = """\
sip:
  port: 5070
  realm: acme
http:
  port: 8081
"""


@pytest.mark.parametrize(
    ("use_flag", "use_env", "expected_port"),
    [(False, False, 5070), (True, False, 5080), (False, True, 5090), (True, True, 5090)],
)
def test_precedence_defaults_yaml_flags_env(
    tmp_path: Path, use_flag: bool, use_env: bool, expected_port: int
) -> None:
    config = write(tmp_path / "c.yaml", YAML)
    overrides = {"sip.port": 5080} if use_flag else {}
    env = {"CALLCENTER_SIP_PORT": "5090"} if use_env else {}
    settings = load_settings(config, overrides, env=env)
    assert settings.sip.port == expected_port
    assert settings.sip.realm == "acme"  # from the file, untouched by the other sources
    assert settings.http.port == 8081
    assert settings.sip.nonce_ttl_s == 300  # default


def test_config_yaml_in_the_working_directory_is_the_default(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", "http:\n  port: 9000\n")
    assert load_settings(None, {}, env={}).http.port == 9000


def test_environment_names_and_value_forms() -> None:
    env = {
        "CALLCENTER_SIP_PORT": "5071",
        "CALLCENTER_HTTP_PORT": "8090",
        "CALLCENTER_DATA_DIR": "/srv/cc",
        "CALLCENTER_SIP_TRANSPORTS": "tcp",
        "CALLCENTER_SIP_HOST_V6": "",
        "CALLCENTER_MEDIA_RTP_PORT_MIN": "30000",
        "CALLCENTER_MEDIA_RTP_PORT_MAX": "30100",
        "CALLCENTER_CALLS_RING_S": "2.5",
        "CALLCENTER_LOG_LEVEL": "DEBUG",
        "CALLCENTER_E2E": "1",  # not a setting: left alone
    }
    settings = load_settings(None, {}, env=env)
    assert settings.sip.port == 5071 and settings.http.port == 8090
    assert settings.data_dir == Path("/srv/cc")
    assert settings.db_url == "sqlite:////srv/cc/callcenter.db"
    assert settings.sip.transports == ["tcp"]
    assert settings.sip.host_v6 is None
    assert (settings.media.rtp_port_min, settings.media.rtp_port_max) == (30000, 30100)
    assert settings.calls.ring_s == 2.5
    assert settings.log.level == "debug"


def test_database_url_wins_over_data_dir() -> None:
    env = {"CALLCENTER_DATABASE_URL": "postgresql://cc@db/cc", "CALLCENTER_DATA_DIR": "/x"}
    assert load_settings(None, {}, env=env).db_url == "postgresql://cc@db/cc"


def test_flags_use_dotted_keys() -> None:
    settings = load_settings(None, {"sip.host": "127.0.0.1", "data_dir": "d", "http.port": 1}, env={})
    assert (settings.sip.host, settings.data_dir, settings.http.port) == ("127.0.0.1", Path("d"), 1)


@pytest.mark.parametrize(
    ("yaml_text", "env", "expected"),
    [
        (None, {"CALLCENTER_SIP_PORT": "abc"}, "sip.port: expected an integer 1-65535, got 'abc'"),
        ("sip:\n  port: 70000\n", None, "sip.port: expected an integer 1-65535, got 70000"),
        ("sip:\n  port: yes\n", None, "sip.port: expected an integer 1-65535, got True"),
        ("http:\n  port: 0\n", None, "http.port: expected an integer 1-65535, got 0"),
        ("sip:\n  prot: 5060\n", None, "sip.prot: unknown key"),
        ("sipp:\n  port: 5060\n", None, "sipp: unknown key"),
        (None, {"CALLCENTER_SIP_PROT": "5060"}, "sip.prot: unknown key"),
        ("sip: 5\n", None, "sip: expected a mapping of settings, got 5"),
        ("sip:\n  host: '::'\n", None, "sip.host: expected an IPv4 address such as 0.0.0.0, got '::'"),
        ("sip:\n  host_v6: 1.2.3.4\n", None, "sip.host_v6: expected an IPv6 address"),
        ("sip:\n  transports: [udp, sctp]\n", None, "sip.transports: expected a non-empty list of udp, tcp"),
        (None, {"CALLCENTER_SIP_TRANSPORTS": ","}, "sip.transports: expected a non-empty list"),
        ("sip:\n  transports: [udp, udp]\n", None, "sip.transports: expected a list of distinct"),
        (
            "sip:\n  register_min_expires: 7200\n",
            None,
            "sip.register_min_expires: expected at most sip.register_max_expires (3600), got 7200",
        ),
        ("sip:\n  register_default_expires: 30\n", None, "sip.register_default_expires: expected a value"),
        (
            "media:\n  rtp_port_min: 20000\n  rtp_port_max: 10000\n",
            None,
            "media.rtp_port_min: expected less than media.rtp_port_max (10000), got 20000",
        ),
        ("media:\n  rtp_port_max: 20001\n", None, "media.rtp_port_max: expected an even integer 2-65534"),
        ("media:\n  rtp_timeout_s: 0\n", None, "media.rtp_timeout_s: expected a number > 0, got 0"),
        ("media:\n  ptime_ms: 25\n", None, "media.ptime_ms: expected one of 10, 20, 30, 40, 50, 60, got 25"),
        ("calls:\n  demo_hangup_after_s: -1\n", None, "calls.demo_hangup_after_s: expected a number >= 0"),
        ("log:\n  format: xml\n", None, "log.format: expected one of json, text, got 'xml'"),
        (None, {"CALLCENTER_DATABASE_URL": "callcenter.db"}, "database_url: expected a database URL"),
    ],
)
def test_error_names_key_and_expectation(
    tmp_path: Path, yaml_text: str | None, env: dict[str, str] | None, expected: str
) -> None:
    assert error_of(tmp_path, yaml_text, env=env).startswith(expected)


def test_error_says_where_the_value_came_from(tmp_path: Path) -> None:
    assert error_of(tmp_path, "log:\n  level: info\nsip:\n  port: x\n").endswith("config.yaml:4)")
    assert error_of(tmp_path, env={"CALLCENTER_HTTP_PORT": "x"}).endswith("(from CALLCENTER_HTTP_PORT)")
    assert error_of(tmp_path, overrides={"sip.port": 0}).endswith("(from command line)")


def test_unknown_key_suggests_the_near_one(tmp_path: Path) -> None:
    assert "did you mean sip.port?" in error_of(tmp_path, overrides={"sip.prot": 1})


def test_yaml_syntax_error_gives_file_line_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sip:\n  port: 5060\n   realm: x\n")
    assert re.fullmatch(r".*config\.yaml:3:\d+: mapping values are not allowed here", message), message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sip:\n  port: 5060\n  port: 5061\n")
    assert re.fullmatch(r".*config\.yaml:3:3: duplicate key 'port'", message), message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping of settings at the top level" in error_of(tmp_path, "- a\n- b\n")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "c.yaml", "# nothing\n"), {}, env={}) == Settings()


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such config file"):
        load_settings(tmp_path / "nope.yaml", {}, env={})


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCENTER_HTTP_PORT", "8181")
    assert load_settings(None, {}).http.port == 8181


def test_a_whole_section_as_override_merges_with_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", YAML)
    settings = load_settings(config, {"sip": {"port": 5099}}, env={})
    assert (settings.sip.port, settings.sip.realm) == (5099, "acme")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "Europe/" + "x" * 300, "../etc/passwd"])
def test_a_timezone_that_is_none_is_a_config_error_naming_the_key(tmp_path: Path, zone: str) -> None:
    # ZoneInfo raises IsADirectoryError for "Europe" and OSError for a name too long: still one clear line
    message = error_of(tmp_path, f"routing:\n  timezone: {zone!r}\n")
    assert "routing.timezone" in message and "IANA timezone" in message, message
