from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from callcenter import __version__
from callcenter.api.http import create_http_app


def get(health: Any) -> Any:
    with TestClient(create_http_app(health)) as client:
        return client.get("/healthz")


def test_healthz_up() -> None:
    response = get(lambda: {"sip": "up", "db": "up"})
    assert response.status_code == 200
    assert response.json() == {"sip": "up", "http": "up", "db": "up", "version": __version__}


def test_healthz_passes_extra_fields_through() -> None:
    response = get(lambda: {"sip": "up", "db": "up", "active_calls": 3})
    assert response.status_code == 200 and response.json()["active_calls"] == 3


def test_healthz_reports_a_down_database_with_503() -> None:
    response = get(lambda: {"sip": "up", "db": "down"})
    assert response.status_code == 503
    assert response.json()["db"] == "down" and response.json()["http"] == "up"


def test_healthz_when_the_probe_itself_fails() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no")

    response = get(broken)
    assert response.status_code == 503
    assert response.json()["version"] == __version__
