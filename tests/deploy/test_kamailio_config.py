"""The Kamailio config template renders completely and Kamailio itself accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.testing.kamailio import (
    KamailioProcess,
    KamailioSettings,
    kamailio_available,
    render_config,
    render_dispatcher_list,
)


def test_every_field_is_filled(tmp_path: Path) -> None:
    settings = KamailioSettings(port=5070, advertise="192.0.2.5:5060", ping_interval_s=3, algorithm=0)
    text = render_config(settings, tmp_path / "dispatcher.list", tmp_path / "modules")
    assert "listen=udp:127.0.0.1:5070 advertise 192.0.2.5:5060" in text
    assert 'modparam("dispatcher", "ds_ping_interval", 3)' in text
    assert 'ds_select_dst("1", "0")' in text
    assert render_dispatcher_list([("10.0.0.1", 5060), ("10.0.0.2", 5062)]) == (
        "1 sip:10.0.0.1:5060\n1 sip:10.0.0.2:5062\n"
    )


def test_an_unfilled_field_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "t.cfg"
    template.write_text('listen=@LISTEN_LINES@\nmodparam("x", "y", @NEW_FIELD@)\n')
    with pytest.raises(ValueError, match="NEW_FIELD"):
        render_config(KamailioSettings(), tmp_path / "d.list", tmp_path, template=template)


@pytest.mark.skipif(not kamailio_available(), reason="kamailio is not installed (make test-peers)")
def test_kamailio_accepts_the_rendered_config(tmp_path: Path) -> None:
    KamailioProcess(tmp_path, [("127.0.0.1", 5999), ("127.0.0.1", 5998)]).check()  # raises with its output
