"""The demo CRM endpoint the sample hotline's order-status branch calls."""

from __future__ import annotations

from fastapi.testclient import TestClient

from callcenter.api.http import create_http_app


def _client() -> TestClient:
    return TestClient(create_http_app(lambda: {"sip": "up", "db": "up"}))


def test_a_sample_order_has_a_status_and_maybe_a_date() -> None:
    client = _client()
    assert client.get("/api/demo/orders/1001").json() == {
        "order": "1001",
        "status": "on its way",
        "eta": "Tuesday",
    }
    assert client.get("/api/demo/orders/1003").json()["eta"] is None


def test_unknown_and_malformed_numbers_are_refused() -> None:
    client = _client()
    assert client.get("/api/demo/orders/999999").status_code == 404
    assert client.get("/api/demo/orders/12a4").status_code == 400
