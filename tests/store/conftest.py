from __future__ import annotations

# Parametrised over SQLite and a throwaway PostgreSQL cluster (skipped when it is not installed).
from callcenter.testing.postgres import database_url, postgres_cluster

__all__ = ["database_url", "postgres_cluster"]
