"""Queries' structure in the control plane's SQLite state, beside its sessions (`control.store`).

The sessions a query expands into (`<query>/<stage>`) do not say which stage
runs after which, how many items a stage fans out to, or the end-to-end SLO
they share; this table keeps the queries themselves, so a restarted control
plane still re-runs query analysis (Nexus §6.2) and still publishes the queries
to the routers. Same database file as the sessions, its own connection.
"""

from __future__ import annotations

import threading
from pathlib import Path

from control.store import Records, connect
from control.types import Query


class QueryStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = connect(self.path)
        self._queries = Records(self._db, self._lock, "queries", Query)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def queries(self) -> list[Query]:
        return self._queries.all()

    def put(self, query: Query) -> None:
        self._queries.put(query)

    def delete(self, query_id: str) -> bool:
        return self._queries.delete(query_id)
