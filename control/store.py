"""Persistent state of the control plane in SQLite: sessions, queries and the last applied plan.

A restarted control plane reads them back, so it keeps its sessions and its
plan (and, through the actuator's reconciliation, reloads nothing). The
queries are kept whole beside the stage sessions they expand into
(`<query>/<stage>`), which do not say which stage runs after which, how many
items a stage fans out to, or the SLO they share: so a restarted control plane
still re-runs query analysis (Nexus §6.2) and publishes the queries to the
routers. `Records` is one table of pydantic records keyed by id, as JSON.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from control.types import Plan, Query, Session

M = TypeVar("M", bound=BaseModel)

_PLANS = """
CREATE TABLE IF NOT EXISTS plans (
    revision INTEGER PRIMARY KEY, body TEXT NOT NULL, applied_at REAL NOT NULL
);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    """The state file at `path` (or ":memory:"), in WAL mode, usable from any thread (each
    user serialises its calls with a lock of its own)."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


class Records(Generic[M]):
    """The table `table` of `model` records (each with an `id`), kept as JSON bodies."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.Lock, table: str, model: type[M]
    ) -> None:
        self._db, self._lock, self._table, self._model = db, lock, table, model
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, body TEXT NOT NULL)")

    def all(self) -> list[M]:
        with self._lock:
            rows = self._db.execute(f"SELECT body FROM {self._table} ORDER BY id").fetchall()
        return [self._model.model_validate_json(r[0]) for r in rows]

    def put(self, item: M) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {self._table} (id, body) VALUES (?, ?)",
                (item.id, item.model_dump_json()),  # type: ignore[attr-defined]
            )

    def delete(self, item_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(f"DELETE FROM {self._table} WHERE id = ?", (item_id,))
        return cur.rowcount > 0


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # One connection, used from the event loop and from worker threads: serialise.
        self._lock = threading.Lock()
        self._db = connect(self.path)
        self._db.executescript(_PLANS)
        self._sessions = Records(self._db, self._lock, "sessions", Session)
        self.queries = Records(self._db, self._lock, "queries", Query)  # .all(), .put(q)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def sessions(self) -> list[Session]:
        return self._sessions.all()

    def put_session(self, session: Session) -> None:
        self._sessions.put(session)

    def delete_session(self, session_id: str) -> bool:
        return self._sessions.delete(session_id)

    def save_plan(self, revision: int, plan: Plan, applied_at: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO plans (revision, body, applied_at) VALUES (?, ?, ?)",
                (revision, plan.model_dump_json(), applied_at),
            )
            # Keep a short history for operators; the last one is what matters.
            self._db.execute("DELETE FROM plans WHERE revision < ?", (revision - 50,))

    def last_plan(self) -> tuple[int, Plan] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT revision, body FROM plans ORDER BY revision DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), Plan.model_validate(json.loads(row[1]))
