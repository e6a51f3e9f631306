"""What the server knows of its clients' browsers: which model versions each one holds, and how their
first-load self-checks went, in SQLite (it outlives restarts).

Anyone can post to the endpoints that feed it, so it is built to be bounded and hard to skew, not to
be trusted: the API stores only the catalog's own ids and versions (any other version as "other"), a
client is the random id its page keeps (nothing else about it), each client has one row per variant
and at most MAX_ADAPTERS adapters, the store keeps the MAX_CLIENTS most recently seen clients, and
self-checks count distinct clients, so one client repeating a failure counts once. A client can still
invent ids: the numbers are a view of the fleet, not evidence about any one client.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

ACTIVE_DAYS = 30      # a client not seen for this long no longer counts
MAX_CLIENTS = 10_000  # clients kept; the least recently seen go first
MAX_ADAPTERS = 4      # adapters kept per client (a browser has one or two)
MAX_ROWS_SHOWN = 200  # self-check groups in the operator's view, most clients first
SCHEMA_VERSION = 2


class Fleet:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._db()) as db, db:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # counts are soft: start over
                db.executescript("DROP TABLE IF EXISTS cached; DROP TABLE IF EXISTS self_checks;"
                                 "DROP TABLE IF EXISTS clients;")
            db.executescript(f"""
                CREATE TABLE IF NOT EXISTS clients (client TEXT PRIMARY KEY, seen REAL);
                CREATE INDEX IF NOT EXISTS clients_seen ON clients (seen);
                CREATE TABLE IF NOT EXISTS cached (client TEXT, model TEXT, version TEXT,
                                                   PRIMARY KEY (client, model, version));
                CREATE TABLE IF NOT EXISTS self_checks (client TEXT, model TEXT, version TEXT, adapter TEXT,
                                                        passed INTEGER, detail TEXT, at REAL,
                                                        PRIMARY KEY (client, model, version, adapter));
                PRAGMA user_version = {SCHEMA_VERSION};""")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def report_cached(self, client: str, cached: list[tuple[str, str]]) -> None:
        """A client's whole list of (catalog id, version): versions it dropped stop counting."""
        with closing(self._db()) as db, db:
            self._seen(db, client)
            db.execute("DELETE FROM cached WHERE client = ?", (client,))
            db.executemany("INSERT OR IGNORE INTO cached VALUES (?, ?, ?)", [(client, m, v) for m, v in cached])

    def report_self_check(self, client: str, model: str, version: str, adapter: str, passed: bool,
                          detail: str) -> None:
        """A client's latest result for one variant version on one adapter replaces its earlier one."""
        with closing(self._db()) as db, db:
            self._seen(db, client)
            db.execute("INSERT OR REPLACE INTO self_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (client, model, version, adapter, int(passed), detail, time.time()))
            db.execute("DELETE FROM self_checks WHERE client = ? AND adapter NOT IN (SELECT adapter FROM self_checks "
                       "WHERE client = ? GROUP BY adapter ORDER BY MAX(at) DESC LIMIT ?)", (client, client, MAX_ADAPTERS))

    @staticmethod
    def _seen(db, client: str) -> None:
        db.execute("INSERT OR REPLACE INTO clients VALUES (?, ?)", (client, time.time()))
        stale = "SELECT client FROM clients ORDER BY seen DESC LIMIT -1 OFFSET ?"
        for table in ("cached", "self_checks", "clients"):
            db.execute(f"DELETE FROM {table} WHERE client IN ({stale})", (MAX_CLIENTS,))

    def versions(self) -> list[dict]:
        """How many active clients hold each model version."""
        since = time.time() - ACTIVE_DAYS * 86400
        with closing(self._db()) as db:
            rows = db.execute("SELECT model, version, COUNT(*) FROM cached JOIN clients USING (client) "
                              "WHERE seen > ? GROUP BY model, version ORDER BY model, version", (since,)).fetchall()
        return [{"id": m, "version": v, "clients": n} for m, v, n in rows]

    def self_checks(self) -> list[dict]:
        """Per model version and adapter, how many distinct clients' self-checks passed and failed: where a
        build computes wrong answers."""
        with closing(self._db()) as db:
            rows = db.execute("SELECT model, version, adapter, SUM(passed), SUM(1 - passed) FROM self_checks "
                              "GROUP BY model, version, adapter ORDER BY COUNT(*) DESC, model, version, adapter "
                              "LIMIT ?", (MAX_ROWS_SHOWN,)).fetchall()
        return [{"id": m, "version": v, "adapter": a, "passed": p, "failed": f} for m, v, a, p, f in rows]
