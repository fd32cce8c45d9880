"""Helpers shared by the API tests (imported by name: tests/api is on sys.path)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from callcenter.auth.service import UserService
from callcenter.store import Store
from callcenter.store.models import CallRecord

PW = "correct horse battery"
ADMIN_TOKEN = "static-admin-token-for-scripts"


def token_for(users: UserService, name: str) -> str:
    return users.create_api_token(name, "tests")


def add_call(store: Store, call_id: str, started: datetime, **extra: Any) -> None:
    ended = extra.pop("ended_at", started)
    with Session(store.engine) as session:
        session.add(
            CallRecord(
                sip_call_id=call_id,
                from_uri="sip:caller@example.com",
                to_uri="sip:100@callcenter",
                started_at=started,
                ended_at=ended,
                disposition=extra.pop("disposition", "answered"),
                extra=extra,
            )
        )
        session.commit()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
