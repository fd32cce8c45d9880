"""Guards for the revisions that may meet tables made by ``create_all`` before Alembic existed."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

__all__ = ["has_column", "has_table"]


def has_table(name: str) -> bool:
    return inspect(op.get_bind()).has_table(name)


def has_column(table: str, column: str) -> bool:
    return any(c["name"] == column for c in inspect(op.get_bind()).get_columns(table))
