"""The `wechat` settings: the token from the environment, secrets masked, mode requirements."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from callcenter.core.config import ConfigError, load_settings


def test_the_environment_token_makes_the_default_account() -> None:
    settings = load_settings(env={"CALLCENTER_WECHAT_TOKEN": "envtoken42"}, overrides={"data_dir": "x"})
    assert settings.wechat.default_account() == "default"
    assert settings.wechat.accounts["default"].token == "envtoken42"
    assert settings.wechat.accounts["default"].mode == "plain"


def test_secrets_are_masked_in_config_show(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    account = {
        "token": "filetoken1",
        "app_id": "wx123",
        "app_secret": "s3cret-value",
        "encoding_aes_key": "a" * 43,
        "previous_aes_key": "b" * 43,
        "mode": "safe",
    }
    config.write_text(yaml.safe_dump({"wechat": {"accounts": {"shop": account}}}))
    shown = yaml.safe_dump(load_settings(config, env={}).model_dump(mode="json"))
    for secret in ("filetoken1", "s3cret-value", "a" * 43, "b" * 43):
        assert secret not in shown
    assert "wx123" in shown


@pytest.mark.parametrize(
    ("account", "message"),
    [
        ({"token": "abc", "mode": "safe", "app_id": "wx1"}, "wechat.accounts.x.encoding_aes_key: expected"),
        ({"token": "abc", "mode": "safe", "encoding_aes_key": "a" * 43}, "accounts.x.app_id: expected"),
        ({"token": "abc", "encoding_aes_key": "short"}, "wechat.accounts.x.encoding_aes_key"),
        ({"mode": "plain"}, "token"),
        ({"token": "a b"}, "wechat.accounts.x.token"),
    ],
)
def test_bad_accounts_are_refused_naming_the_key(account: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(overrides={"wechat": {"accounts": {"x": account}}}, env={})


def test_the_shipped_config_has_no_wechat_account() -> None:
    root = Path(__file__).resolve().parents[3]
    settings = load_settings(root / "config.yaml", env={})
    assert settings.wechat.accounts == {} and settings.wechat.passive_reply_s == 4.5
