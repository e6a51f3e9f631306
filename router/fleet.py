"""What the server knows of its clients' browsers: which model versions each one holds, and how their
first-load self-checks went, and how fast their browsers really ran against the bandwidth prediction
(per adapter class: the router's calibration), in SQLite (it outlives restarts).

Anyone can post to the endpoints that feed it, so it is built to be bounded and hard to skew, not to
be trusted: the API stores only the catalog's own ids and versions (any other version as "other"), a
client is the random id its page keeps (nothing else about it), each client has one row per variant
and at most MAX_ADAPTERS adapters, the store keeps the MAX_CLIENTS most recently seen clients, and
self-checks count distinct clients, so one client repeating a failure counts once. A client can still
invent ids: the numbers are a view of the fleet, not evidence about any one client.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from statistics import median
from pathlib import Path

ACTIVE_DAYS = 30      # a client not seen for this long no longer counts
MAX_CLIENTS = 10_000  # clients kept; the least recently seen go first
MAX_ADAPTERS = 4      # adapters kept per client (a browser has one or two)
MAX_ROWS_SHOWN = 200  # self-check groups in the operator's view, most clients first
SCHEMA_VERSION = 3


class Fleet:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # one connection per server thread, kept open (see _db)
        with self._db() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # counts are soft: start over
                db.executescript("DROP TABLE IF EXISTS cached; DROP TABLE IF EXISTS self_checks;"
                                 "DROP TABLE IF EXISTS clients; DROP TABLE IF EXISTS calibration;")
            db.execute("PRAGMA journal_mode = WAL")  # readers (/metrics, /api/fleet) never wait for writers
            db.executescript(f"""
                CREATE TABLE IF NOT EXISTS clients (client TEXT PRIMARY KEY, seen REAL);
                CREATE INDEX IF NOT EXISTS clients_seen ON clients (seen);
                CREATE TABLE IF NOT EXISTS cached (client TEXT, model TEXT, version TEXT,
                                                   PRIMARY KEY (client, model, version));
                CREATE TABLE IF NOT EXISTS calibration (client TEXT, adapter_class TEXT, ratio REAL, at REAL,
                                                        PRIMARY KEY (client, adapter_class));
                CREATE TABLE IF NOT EXISTS self_checks (client TEXT, model TEXT, version TEXT, adapter TEXT,
                                                        passed INTEGER, detail TEXT, at REAL,
                                                        PRIMARY KEY (client, model, version, adapter));
                PRAGMA user_version = {SCHEMA_VERSION};""")

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened once: closing the last connection to a WAL database checkpoints
        and deletes the WAL (disk flushes), which made every report cost ~17 ms instead of ~0.2."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA synchronous = NORMAL")  # with the WAL journal: no disk flush per report, still consistent
        return db

    def report_probe(self, client: str, cached: list[tuple[str, str]], adapter_class: str | None,
                     ratio: float | None) -> None:
        """A client's whole list of (catalog id, version), so versions it dropped stop counting; and, when it
        measured, its measured/predicted decode speed on its adapter class (clipped by the caller), the
        latest per class replacing the earlier one."""
        with self._db() as db:
            self._seen(db, client)
            db.execute("DELETE FROM cached WHERE client = ?", (client,))
            db.executemany("INSERT OR IGNORE INTO cached VALUES (?, ?, ?)", [(client, m, v) for m, v in cached])
            if adapter_class and ratio is not None:
                db.execute("INSERT OR REPLACE INTO calibration VALUES (?, ?, ?, ?)",
                           (client, adapter_class, ratio, time.time()))
                self._keep_latest_adapters(db, "calibration", "adapter_class", client)

    def report_self_check(self, client: str, model: str, version: str, adapter: str, passed: bool,
                          detail: str) -> None:
        """A client's latest result for one variant version on one adapter replaces its earlier one."""
        with self._db() as db:
            self._seen(db, client)
            db.execute("INSERT OR REPLACE INTO self_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (client, model, version, adapter, int(passed), detail, time.time()))
            self._keep_latest_adapters(db, "self_checks", "adapter", client)

    def calibration(self, adapter_class: str, min_clients: int) -> float | None:
        """The median ratio of the class's clients, once at least `min_clients` have measured."""
        with self._db() as db:
            ratios = [r for (r,) in db.execute("SELECT ratio FROM calibration WHERE adapter_class = ? ORDER BY ratio",
                                               (adapter_class,))]
        return median(ratios) if len(ratios) >= min_clients else None

    def calibrations(self, min_clients: int) -> list[dict]:
        """For operators: each adapter class's factor and how many clients it rests on."""
        with self._db() as db:
            rows = db.execute("SELECT adapter_class, ratio FROM calibration").fetchall()
        by_class: dict[str, list[float]] = {}
        for adapter_class, ratio in rows:
            by_class.setdefault(adapter_class, []).append(ratio)
        shown = sorted((c for c, r in by_class.items() if len(r) >= min_clients), key=lambda c: -len(by_class[c]))
        return [{"adapter_class": c, "clients": len(by_class[c]), "factor": round(median(by_class[c]), 4)}
                for c in shown[:MAX_ROWS_SHOWN]]

    @staticmethod
    def _keep_latest_adapters(db, table: str, column: str, client: str) -> None:
        """A client's rows for its MAX_ADAPTERS most recently reported adapters (or classes) only."""
        db.execute(f"DELETE FROM {table} WHERE client = ? AND {column} NOT IN (SELECT {column} FROM {table} "
                   f"WHERE client = ? GROUP BY {column} ORDER BY MAX(at) DESC LIMIT ?)", (client, client, MAX_ADAPTERS))

    @staticmethod
    def _seen(db, client: str) -> None:
        db.execute("INSERT OR REPLACE INTO clients VALUES (?, ?)", (client, time.time()))
        stale = "SELECT client FROM clients ORDER BY seen DESC LIMIT -1 OFFSET ?"
        for table in ("cached", "self_checks", "calibration", "clients"):
            db.execute(f"DELETE FROM {table} WHERE client IN ({stale})", (MAX_CLIENTS,))

    def versions(self) -> list[dict]:
        """How many active clients hold each model version."""
        since = time.time() - ACTIVE_DAYS * 86400
        with self._db() as db:
            rows = db.execute("SELECT model, version, COUNT(*) FROM cached JOIN clients USING (client) "
                              "WHERE seen > ? GROUP BY model, version ORDER BY model, version", (since,)).fetchall()
        return [{"id": m, "version": v, "clients": n} for m, v, n in rows]

    def self_checks(self) -> list[dict]:
        """Per model version and adapter, how many distinct clients' self-checks passed and failed: where a
        build computes wrong answers."""
        with self._db() as db:
            rows = db.execute("SELECT model, version, adapter, SUM(passed), SUM(1 - passed) FROM self_checks "
                              "GROUP BY model, version, adapter ORDER BY COUNT(*) DESC, model, version, adapter "
                              "LIMIT ?", (MAX_ROWS_SHOWN,)).fetchall()
        return [{"id": m, "version": v, "adapter": a, "passed": p, "failed": f} for m, v, a, p, f in rows]
