"""What the server knows of its clients' browsers: which model versions each one holds, and how their
first-load self-checks went, and how fast their browsers really ran against the bandwidth prediction
(per adapter class: the router's calibration), in SQLite (it outlives restarts).

Anyone can post to the endpoints that feed it, so it is built to be bounded and hard to skew, not to
be trusted: the API stores only the catalog's own ids and versions (any other version as "other"), a
client is the random id its page keeps, each client has one row per variant and at most MAX_ADAPTERS
adapters. Ids are free to invent, so what would let invented ids buy influence counts sources instead:
a client's source is a keyed hash of its network address (the address itself is never stored; an IPv6
/64 is one source). The calibration is the median over sources (each source's own median first), and
self-checks count distinct sources, so a thousand ids from one address weigh as one client; one source
keeps at most MAX_CLIENTS_PER_SOURCE ids (its least recently seen go first), so its new ids push out
only its own, and it may bring at most `new_clients_per_hour` new ids an hour (the reports of any more
are dropped; loopback is exempt: it is this machine, or a same-host proxy the operator has not named in
SEAM_TRUSTED_PROXY, behind which every client shares one address). The store keeps MAX_CLIENTS clients in all; when full, clients that never measured
nor self-checked go first, the least recently seen of them first.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import sqlite3
import threading
import time
from statistics import median
from pathlib import Path

ACTIVE_DAYS = 30      # a client not seen for this long no longer counts
MAX_CLIENTS = 10_000  # clients kept; the least recently seen go first
MAX_CLIENTS_PER_SOURCE = 256  # client ids kept per network address (a household or office behind one NAT)
MAX_ADAPTERS = 4      # adapters kept per client (a browser has one or two)
MAX_ROWS_SHOWN = 200  # self-check groups in the operator's view, most clients first
SCHEMA_VERSION = 6
TABLES = ("cached", "self_checks", "calibration", "clients")


def client_network(address: str | None) -> str:
    """What counts as one client: its IPv4 address, or its IPv6 address's /64 (one host's share of IPv6)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    return str(ipaddress.ip_network(f"{ip}/64", strict=False) if ip.version == 6 else ip)


class Fleet:
    def __init__(self, path: str | Path, new_clients_per_hour: int = 32):
        self.path = Path(path)
        self.new_clients_per_hour = new_clients_per_hour  # per source (0: no limit)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # one connection per server thread, kept open (see _db)
        with self._db() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # counts are soft: start over
                db.executescript("".join(f"DROP TABLE IF EXISTS {table};" for table in TABLES + ("secret",)))
            db.execute("PRAGMA journal_mode = WAL")  # readers (/metrics, /api/fleet) never wait for writers
            db.executescript(f"""
                CREATE TABLE IF NOT EXISTS secret (key BLOB);
                CREATE TABLE IF NOT EXISTS clients (client TEXT PRIMARY KEY, source TEXT, seen REAL, first_seen REAL);
                CREATE INDEX IF NOT EXISTS clients_seen ON clients (seen);
                CREATE INDEX IF NOT EXISTS clients_source ON clients (source, seen);
                CREATE INDEX IF NOT EXISTS clients_new ON clients (source, first_seen);
                CREATE TABLE IF NOT EXISTS cached (client TEXT, model TEXT, version TEXT,
                                                   PRIMARY KEY (client, model, version));
                CREATE TABLE IF NOT EXISTS calibration (client TEXT, adapter_class TEXT, ratio REAL, at REAL,
                                                        PRIMARY KEY (client, adapter_class));
                CREATE TABLE IF NOT EXISTS self_checks (client TEXT, model TEXT, version TEXT, adapter TEXT,
                                                        passed INTEGER, at REAL,
                                                        PRIMARY KEY (client, model, version, adapter));
                PRAGMA user_version = {SCHEMA_VERSION};""")
            if db.execute("SELECT key FROM secret").fetchone() is None:
                db.execute("INSERT INTO secret VALUES (?)", (os.urandom(32),))
            self._key = db.execute("SELECT key FROM secret").fetchone()[0]
        self._loopback = {self.source_of("127.0.0.1"), self.source_of("::1")}

    def source_of(self, address: str | None) -> str:
        """A client's source: a keyed hash of its network (client_network), never the address."""
        return hashlib.blake2b(client_network(address).encode(), key=self._key, digest_size=12).hexdigest()

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened once: closing the last connection to a WAL database checkpoints
        and deletes the WAL (disk flushes), which made every report cost ~17 ms instead of ~0.2."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA synchronous = NORMAL")  # with the WAL journal: no disk flush per report, still consistent
        return db

    def report_probe(self, client: str, source: str, cached: list[tuple[str, str]], adapter_class: str | None,
                     ratio: float | None) -> None:
        """A client's whole list of (catalog id, version), so versions it dropped stop counting; and, when it
        measured, its measured/predicted decode speed on its adapter class (clipped by the caller), the
        latest per class replacing the earlier one."""
        with self._db() as db:
            if not self._seen(db, client, source):
                return
            db.execute("DELETE FROM cached WHERE client = ?", (client,))
            db.executemany("INSERT OR IGNORE INTO cached VALUES (?, ?, ?)", [(client, m, v) for m, v in cached])
            if adapter_class and ratio is not None:
                db.execute("INSERT OR REPLACE INTO calibration VALUES (?, ?, ?, ?)",
                           (client, adapter_class, ratio, time.time()))
                self._keep_latest_adapters(db, "calibration", "adapter_class", client)

    def report_self_check(self, client: str, source: str, model: str, version: str, adapter: str,
                          passed: bool) -> bool:
        """A client's latest result for one variant version on one adapter replaces its earlier one; whether
        the result is new for its source (so that one source repeating it, under any ids, counts once)."""
        with self._db() as db:
            if not self._seen(db, client, source):
                return False
            known = db.execute("SELECT 1 FROM self_checks JOIN clients USING (client) WHERE source = ? AND model = ? "
                               "AND version = ? AND adapter = ? AND passed = ? LIMIT 1",
                               (source, model, version, adapter, int(passed))).fetchone()
            db.execute("INSERT OR REPLACE INTO self_checks VALUES (?, ?, ?, ?, ?, ?)",
                       (client, model, version, adapter, int(passed), time.time()))
            self._keep_latest_adapters(db, "self_checks", "adapter", client)
        return known is None

    def calibration(self, adapter_class: str, min_sources: int) -> float | None:
        """The median over the class's sources (each source's median first), once at least `min_sources`
        sources have measured."""
        by_source = self._ratios_by_source(adapter_class).get(adapter_class, {})
        medians = [median(ratios) for ratios in by_source.values()]
        return median(medians) if len(medians) >= min_sources else None

    def calibrations(self, min_sources: int) -> list[dict]:
        """For operators: each adapter class's factor, and how many sources and client ids it rests on."""
        by_class = self._ratios_by_source()
        shown = sorted((c for c, s in by_class.items() if len(s) >= min_sources), key=lambda c: -len(by_class[c]))
        return [{"adapter_class": c, "sources": len(by_class[c]), "clients": sum(map(len, by_class[c].values())),
                 "factor": round(median(median(r) for r in by_class[c].values()), 4)} for c in shown[:MAX_ROWS_SHOWN]]

    def _ratios_by_source(self, adapter_class: str | None = None) -> dict[str, dict[str, list[float]]]:
        """Each adapter class's ratios (only `adapter_class`'s, where given), grouped by source."""
        with self._db() as db:
            rows = db.execute("SELECT adapter_class, source, ratio FROM calibration JOIN clients USING (client) "
                              "WHERE ?1 IS NULL OR adapter_class = ?1", (adapter_class,)).fetchall()
        by_class: dict[str, dict[str, list[float]]] = {}
        for adapter, source, ratio in rows:
            by_class.setdefault(adapter, {}).setdefault(source, []).append(ratio)
        return by_class

    @staticmethod
    def _keep_latest_adapters(db, table: str, column: str, client: str) -> None:
        """A client's rows for its MAX_ADAPTERS most recently reported adapters (or classes) only."""
        db.execute(f"DELETE FROM {table} WHERE client = ? AND {column} NOT IN (SELECT {column} FROM {table} "
                   f"WHERE client = ? GROUP BY {column} ORDER BY MAX(at) DESC LIMIT ?)", (client, client, MAX_ADAPTERS))

    def _seen(self, db, client: str, source: str) -> bool:
        """Marks the client seen now; False (store nothing) for a new id past its source's hourly allowance.
        Only a new id can fill the store, so only then is it pruned."""
        now = time.time()
        if db.execute("UPDATE clients SET seen = ?, source = ? WHERE client = ?", (now, source, client)).rowcount:
            return True
        if self.new_clients_per_hour and source not in self._loopback and db.execute(
                "SELECT COUNT(*) FROM clients WHERE source = ? AND first_seen > ?",
                (source, now - 3600)).fetchone()[0] >= self.new_clients_per_hour:
            return False
        db.execute("INSERT INTO clients VALUES (?, ?, ?, ?)", (client, source, now, now))
        stale = db.execute("SELECT client FROM clients WHERE source = ? ORDER BY seen DESC LIMIT -1 OFFSET ?",
                           (source, MAX_CLIENTS_PER_SOURCE)).fetchall()
        if db.execute("SELECT COUNT(*) FROM clients").fetchone()[0] > MAX_CLIENTS:  # full: the idle go first
            stale += db.execute(
                "SELECT client FROM clients ORDER BY EXISTS (SELECT 1 FROM calibration c WHERE c.client = clients.client) "
                "OR EXISTS (SELECT 1 FROM self_checks s WHERE s.client = clients.client) DESC, seen DESC "
                "LIMIT -1 OFFSET ?", (MAX_CLIENTS,)).fetchall()
        for table in TABLES:
            db.executemany(f"DELETE FROM {table} WHERE client = ?", stale)
        return True

    def versions(self) -> list[dict]:
        """How many active clients hold each model version."""
        since = time.time() - ACTIVE_DAYS * 86400
        with self._db() as db:
            rows = db.execute("SELECT model, version, COUNT(*) FROM cached JOIN clients USING (client) "
                              "WHERE seen > ? GROUP BY model, version ORDER BY model, version", (since,)).fetchall()
        return [{"id": m, "version": v, "clients": n} for m, v, n in rows]

    def self_checks(self) -> list[dict]:
        """Per model version and adapter, how many distinct sources' self-checks passed and failed: where a
        build computes wrong answers."""
        with self._db() as db:
            rows = db.execute("SELECT model, version, adapter, COUNT(DISTINCT CASE WHEN passed THEN source END), "
                              "COUNT(DISTINCT CASE WHEN passed THEN NULL ELSE source END) FROM self_checks "
                              "JOIN clients USING (client) GROUP BY model, version, adapter "
                              "ORDER BY COUNT(DISTINCT source) DESC, model, version, adapter LIMIT ?",
                              (MAX_ROWS_SHOWN,)).fetchall()
        return [{"id": m, "version": v, "adapter": a, "passed": p, "failed": f} for m, v, a, p, f in rows]
