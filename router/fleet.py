"""What the server knows of its clients' browsers: which model versions each one holds, and how their
first-load self-checks went. Kept in SQLite so every gunicorn worker sees (and /metrics reports) one
fleet. A client is the random id its page keeps in localStorage; nothing else about it is stored.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

ACTIVE_DAYS = 30  # a client not seen for this long no longer counts


class Fleet:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._db()) as db:
            db.executescript("""
                CREATE TABLE IF NOT EXISTS cached (client TEXT, model TEXT, version TEXT, seen REAL,
                                                   PRIMARY KEY (client, model, version));
                CREATE TABLE IF NOT EXISTS self_checks (client TEXT, model TEXT, version TEXT, adapter TEXT,
                                                        passed INTEGER, detail TEXT, at REAL);""")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def report_cached(self, client: str, cached: list[dict]) -> None:
        """A client's whole list: versions it dropped stop counting."""
        with closing(self._db()) as db, db:
            db.execute("DELETE FROM cached WHERE client = ?", (client,))
            db.executemany("INSERT OR REPLACE INTO cached VALUES (?, ?, ?, ?)",
                           [(client, c["id"], c["version"], time.time()) for c in cached])

    def report_self_check(self, client: str | None, model: str, version: str, adapter: str, passed: bool,
                          detail: str) -> None:
        with closing(self._db()) as db, db:
            db.execute("INSERT INTO self_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (client, model, version, adapter, int(passed), detail, time.time()))

    def versions(self) -> list[dict]:
        """How many active clients hold each model version."""
        since = time.time() - ACTIVE_DAYS * 86400
        with closing(self._db()) as db:
            rows = db.execute("SELECT model, version, COUNT(DISTINCT client) FROM cached WHERE seen > ? "
                              "GROUP BY model, version ORDER BY model, version", (since,)).fetchall()
        return [{"id": m, "version": v, "clients": n} for m, v, n in rows]

    def self_checks(self) -> list[dict]:
        """Self-check results per model version and adapter: where a build computes wrong answers."""
        with closing(self._db()) as db:
            rows = db.execute("SELECT model, version, adapter, SUM(passed), SUM(1 - passed) FROM self_checks "
                              "GROUP BY model, version, adapter ORDER BY model, version, adapter").fetchall()
        return [{"id": m, "version": v, "adapter": a, "passed": p, "failed": f} for m, v, a, p, f in rows]
