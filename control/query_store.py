"""Queries' structure in the control plane's SQLite state, beside its sessions (`control.store`).

The sessions a query expands into (`<query>/<stage>`) do not say which stage
runs after which, how many items a stage fans out to, or the end-to-end SLO
they share; this table keeps the queries themselves, so a restarted control
plane still re-runs query analysis (Nexus §6.2) and still publishes the queries
to the routers. Same database file as the sessions, its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from control.types import Query

_SCHEMA = "CREATE TABLE IF NOT EXISTS queries (id TEXT PRIMARY KEY, body TEXT NOT NULL);"


class QueryStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def queries(self) -> list[Query]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM queries ORDER BY id").fetchall()
        return [Query.model_validate_json(r[0]) for r in rows]

    def put(self, query: Query) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO queries (id, body) VALUES (?, ?)",
                (query.id, query.model_dump_json()),
            )

    def delete(self, query_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM queries WHERE id = ?", (query_id,))
        return cur.rowcount > 0
