"""Persistent state of the control plane in SQLite: sessions and the last applied plan.

A restarted control plane reads both back, so it keeps its sessions and its
plan (and, through the actuator's reconciliation, reloads nothing).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from control.types import Plan, Session

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    revision INTEGER PRIMARY KEY, body TEXT NOT NULL, applied_at REAL NOT NULL
);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from the event loop and from worker threads: serialise.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def sessions(self) -> list[Session]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM sessions ORDER BY id").fetchall()
        return [Session.model_validate_json(r[0]) for r in rows]

    def put_session(self, session: Session) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sessions (id, body) VALUES (?, ?)",
                (session.id, session.model_dump_json()),
            )

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cur.rowcount > 0

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
