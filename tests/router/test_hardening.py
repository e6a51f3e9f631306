"""What an anonymous client can do to the server, tried against the real thing: `python -m router` (as
`make serve` runs it) in its own process over loopback, serving the tiny model, with raw sockets where
the attack lives below HTTP. Each test is an attack that once took the server, or part of it, down."""
import base64
import http.client
import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from router.config import defaults
from router.grammar import SCHEMA_LIMITS
from tests.support.models import catalog_of
from tests.support.probes import measuring_probe
from tests.support.servers import connect, raw_post, reset, seam_server, session_from
from tests.support.structured import nested

CAPACITY = defaults()["MAX_QUEUE"]
IDLE_TIMEOUT_S = 2
STREAM_BUFFER_BYTES = 64 << 10  # below the tiny model's longest answer (~300 KB of events)
LONG = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 900, "temperature": 0}
SHORT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
PROBE = {"schema_version": 1, "webgpu": {"available": False}}


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """Default settings but a short idle timeout (so the test of it is quick), a stream buffer the tiny model's
    answers fill, and a fleet of its own."""
    fleet = tmp_path_factory.mktemp("fleet") / "fleet.sqlite3"
    with seam_server(tiny_models, SEAM_FLEET_DB=str(fleet), SEAM_IDLE_TIMEOUT_S=str(IDLE_TIMEOUT_S),
                     SEAM_STREAM_BUFFER_BYTES=str(STREAM_BUFFER_BYTES)) as url:
        yield url


def chat(url, body, timeout=60, **kwargs):
    return requests.post(url + "/v1/chat/completions", json=body, timeout=timeout, **kwargs)


def timed_get(url, path) -> float:
    started = time.monotonic()
    assert requests.get(url + path, timeout=30).ok
    return time.monotonic() - started


def until(condition, timeout_s=20.0, every_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(every_s)
    return condition()


# --- 1. queue slots ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False])
def test_clients_that_reset_after_sending_give_their_slots_back(server, stream):
    """Each reset chat was counted as waiting and never uncounted: after CAPACITY of them, every chat was a
    503 while the engine sat idle."""
    for _ in range(3 * CAPACITY):
        sock = connect(server)
        sock.sendall(raw_post(server, "/v1/chat/completions", json.dumps({**LONG, "stream": stream}).encode()))
        time.sleep(0.02)  # long enough for the request to reach the app
        reset(sock)
    answers = until(lambda: [r for r in [chat(server, SHORT)] if r.status_code == 200])
    assert answers, "the server still refuses chats after the clients that reset went away"
    busy = until(lambda: requests.get(server + "/metrics", timeout=10).text.count("seam_chats_in_flight 0.0"))
    assert busy, "chats of clients that left are still counted in flight"


def test_a_chat_whose_client_left_stops_generating(default_built, tmp_path):
    """A non-streamed answer went on to max_tokens after its client left, holding the engine. On the real
    model: at temperature 2 it samples near-uniformly, so 1,500 tokens (about 45 s here) without a stop."""
    with seam_server(default_built, SEAM_FLEET_DB=str(tmp_path / "f.db")) as url:
        sock = connect(url)
        body = {**SHORT, "temperature": 2.0, "top_p": 1.0, "seed": 1, "max_tokens": 1500}
        sock.sendall(raw_post(url, "/v1/chat/completions", json.dumps(body).encode()))
        time.sleep(2)
        sock.close()
        started = time.monotonic()
        assert chat(url, {**SHORT, "max_tokens": 1}).status_code == 200
        assert time.monotonic() - started < 10, "the engine went on answering a client that had left"


def status_of(sock) -> int:
    """The status code of the response on a raw socket."""
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(64) or b"\r\n"
    return int(head.split()[1]) if head.startswith(b"HTTP/") else 0


def test_one_address_cannot_take_the_chat_api(server):
    """20 streams no one read (max_tokens 2048) took every slot and kept generating: every other chat got
    503 for minutes. One address holds at most MAX_CHATS_PER_CLIENT chats (the rest are prompt 429s with
    Retry-After), so a client at another address is answered while they run, and its own chats end."""
    per_client = defaults()["MAX_CHATS_PER_CLIENT"]
    alone = time.monotonic()
    assert chat(server, LONG).status_code == 200
    one_long_s = time.monotonic() - alone
    with ExitStack() as stack:
        streams = []
        for i in range(8):  # never read until the end; half stream, half wait for a whole answer
            sock = stack.enter_context(closing(connect(server, source="127.0.0.2")))
            sock.sendall(raw_post(server, "/v1/chat/completions", json.dumps({**LONG, "stream": i % 2 == 0}).encode()))
            streams.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
        answer = session_from("127.0.0.3").post(server + "/v1/chat/completions", json=SHORT, timeout=120)
        waited = time.monotonic() - started
        statuses = [status_of(sock) for sock in streams]
    assert answer.status_code == 200
    assert sorted(statuses) == [200] * per_client + [429] * (8 - per_client), statuses
    # Behind at most the address's own chats (before: all eight of them, one after another).
    assert waited < per_client * one_long_s + 5, (waited, one_long_s)


def test_streams_no_one_reads_stop_and_free_their_slots(server):
    """Streams never read went on generating to max_tokens, each holding the engine and a slot. One whose
    client takes nothing stops once SEAM_STREAM_BUFFER_BYTES of it wait unsent: 8 of them, from 4 addresses,
    leave a ninth client answered at once, and every slot free while their sockets are still open."""
    body = json.dumps({**LONG, "max_tokens": 980, "stream": True}).encode()
    with ExitStack() as stack:
        streams = []
        for i in range(8):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes nothing
            sock.bind((f"127.0.0.{10 + i // 2}", 0))
            sock.connect((urlsplit(server).hostname, urlsplit(server).port))
            stack.enter_context(closing(sock))
            sock.sendall(raw_post(server, "/v1/chat/completions", body))
            streams.append(sock)
        started = time.monotonic()
        assert until(lambda: "seam_chats_in_flight 0.0" in requests.get(server + "/metrics", timeout=10).text, 10)
        assert chat(server, SHORT, timeout=30).status_code == 200
        assert time.monotonic() - started < 5
        answers = [read_all(sock) for sock in streams]
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200") and b'"finish_reason": "length"' not in answer
        assert b'"code": "stream_not_read"' in answer, "the stream did not say why it stopped"
        assert answer.count(b'"token_ids"') < 980, "an unread stream went on to max_tokens"


def read_all(sock) -> bytes:
    """What the server sent on `sock` until it closed the connection (idle after the answer)."""
    sock.settimeout(IDLE_TIMEOUT_S + 10)
    received = b""
    while data := sock.recv(1 << 16):
        received += data
    return received


def test_a_client_over_its_seconds_a_minute_waits_and_others_do_not():
    from router.capacity import ChatSlots
    from router.errors import ApiError
    slots = ChatSlots(limit=8, per_client=2, client_s_per_min=0.2)
    slot = slots.take("192.0.2.1")
    time.sleep(0.3)
    slot.release()
    with pytest.raises(ApiError) as refused:
        slots.take("192.0.2.1")
    assert refused.value.status == 429 and refused.value.code == "too_many_chats"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60 and "SEAM_CLIENT_CHAT_S_PER_MIN" in refused.value.message
    slots.take("192.0.2.2").release()  # another client is not held back
    held = [slots.take("192.0.2.3"), slots.take("192.0.2.3")]
    with pytest.raises(ApiError, match="SEAM_MAX_CHATS_PER_CLIENT"):
        slots.take("192.0.2.3")
    held[0].release()
    slots.take("192.0.2.3")


# --- 2. slow clients ---------------------------------------------------------------------------------

def test_slow_clients_hold_sockets_not_threads(server):
    """24 sockets sending part of their headers, or part of a body, once made /healthz time out for 25 s."""
    with ExitStack() as stack:
        for i in range(32):
            sock = stack.enter_context(connect(server))
            if i % 2:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
            else:
                sock.sendall(raw_post(server, "/v1/chat/completions", b"x" * 1000)[:-990])
        assert timed_get(server, "/healthz") < 2
        assert chat(server, SHORT).status_code == 200


@pytest.mark.parametrize("request_bytes, status, code", [
    (lambda url: raw_post(url, "/v1/chat/completions", b"{" * (defaults()["MAX_CONTENT_LENGTH"] + 1)), 413,
     "request_too_large"),
    (lambda url: b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 431, "headers_too_large"),
    (lambda url: b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
])
def test_what_waitress_refuses_has_the_apis_shape(server, request_bytes, status, code):
    """waitress answers these itself, before the app sees them: they were text/plain, without the security
    headers, unlike every other error the server gives."""
    with closing(connect(server)) as sock:
        sock.sendall(request_bytes(server))
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
    assert response.status == status and body["error"]["code"] == code and body["error"]["message"]
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Content-Type-Options") == "nosniff" and response.getheader("Content-Security-Policy")


def test_idle_and_dribbling_connections_are_closed(server):
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    sock.settimeout(IDLE_TIMEOUT_S + 15)
    started = time.monotonic()
    assert sock.recv(100) == b"", "the server kept a connection whose headers never finished"
    assert time.monotonic() - started < IDLE_TIMEOUT_S + 15
    sock.close()


# --- 3, 4. metrics and the fleet store ----------------------------------------------------------------

def test_client_strings_never_become_metric_labels(server, tiny_models):
    entry = catalog_of(tiny_models)["models"][0]
    surrogate = '{"schema_version": 1, "webgpu": {"available": false}, "cached_models": [{"id": "\\ud800", "version": "1"}]}'
    r = requests.post(server + "/api/route", data=surrogate, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]
    held = [{"id": "made-up-model", "version": "1"}, {"id": entry["id"], "version": "made-up-version"}]
    assert requests.post(server + "/api/route", json={**PROBE, "cached_models": held}, timeout=10).ok
    metrics = requests.get(server + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "made-up" not in metrics.text
    assert f'seam_client_model_reports_total{{model="{entry["id"]}",version="other"}}' in metrics.text


def test_the_fleet_store_stays_small_and_counts_clients_not_reports(server, tiny_models):
    """400 posts with random ids and 64 long model ids each once grew the store to 113 MB and recorded
    200 fake self-check failures."""
    entry = catalog_of(tiny_models)["models"][0]
    junk = [{"id": f"{i:02d}" + "x" * 198, "version": "v" * 64} for i in range(64)]

    def post(i):
        probe = {**PROBE, "client_id": f"client-{i:08d}", "cached_models": junk}
        assert requests.post(server + "/api/route", json=probe, timeout=30).ok
        failure = {"id": entry["id"], "version": entry["version"], "passed": False, "adapter": "a" * 200,
                   "client_id": "client-the-same-one"}
        assert requests.post(server + "/api/self-check", json=failure, timeout=30).ok

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(400)))
    fleet = requests.get(server + "/api/fleet", timeout=10)
    metrics = requests.get(server + "/metrics", timeout=10)
    assert len(fleet.content) < 10_000 and len(metrics.content) < 100_000
    failed = [row for row in fleet.json()["self_checks"] if row["id"] == entry["id"]]
    assert [row["failed"] for row in failed] == [1], "one client's repeated failure must count once"
    assert "x" * 10 not in fleet.text + metrics.text


def test_the_fleet_keeps_the_most_recent_clients(tmp_path, monkeypatch):
    from router import fleet as fleet_module
    monkeypatch.setattr(fleet_module, "MAX_CLIENTS", 5)
    store = fleet_module.Fleet(tmp_path / "fleet.sqlite3")
    for i in range(12):
        source = store.source_of(f"10.0.0.{i}")
        store.report_probe(f"client-{i:04d}", source, [("m", "v1")], "class", 0.5)
        store.report_self_check(f"client-{i:04d}", source, "m", "v1", "adapter", i % 2 == 0)
    assert store.versions() == [{"id": "m", "version": "v1", "clients": 5}]
    assert [(r["passed"], r["failed"]) for r in store.self_checks()] == [(2, 3)]  # clients 7..11
    assert store.calibrations(min_sources=1) == [{"adapter_class": "class", "sources": 5, "clients": 5, "factor": 0.5}]


def test_ids_invented_at_one_address_neither_buy_the_calibration_nor_push_out_other_clients(tmp_path, monkeypatch):
    """Fresh ids were free: 6 moved a class's factor to the top of its range, 46 more to the bottom, and
    10,100 pruned every real client. Ids from one address are one source, and push out only their own."""
    from router import fleet as fleet_module
    monkeypatch.setattr(fleet_module, "MAX_CLIENTS_PER_SOURCE", 20)
    store = fleet_module.Fleet(tmp_path / "fleet.sqlite3")
    honest = [0.8, 0.9, 1.0, 1.1, 1.2]
    for i, ratio in enumerate(honest):
        source = store.source_of(f"2001:db8:{i}::1")
        store.report_probe(f"honest-{i:04d}", source, [("m", "v1")], "class", ratio)
        store.report_self_check(f"honest-{i:04d}", source, "m", "v1", "adapter", True)
    attacker = store.source_of("203.0.113.7")
    assert attacker == store.source_of("203.0.113.7") != store.source_of("203.0.113.8")
    assert store.source_of("2001:db8:0::1") == store.source_of("2001:db8:0::ffff")  # an IPv6 /64 is one source
    assert fleet_module.client_network("2001:db8::1") == "2001:db8::/64"  # and one client to the chat limits
    for i in range(300):
        store.report_probe(f"attacker-{i:04d}", attacker, [("m", "v1")], "class", 4.0 if i < 6 else 0.02)
        store.report_self_check(f"attacker-{i:04d}", attacker, "m", "v1", "adapter", False)
    assert 0.8 <= store.calibration("class", min_sources=3) <= 1.2
    assert store.calibrations(min_sources=3) == [{"adapter_class": "class", "sources": 6, "clients": 25, "factor": 0.95}]
    assert [(r["passed"], r["failed"]) for r in store.self_checks()] == [(5, 1)]
    assert store.versions() == [{"id": "m", "version": "v1", "clients": 25}]  # 5 honest, the attacker's last 20
    with store._db() as db:
        assert "203.0.113.7" not in str(db.execute("SELECT * FROM clients").fetchall())  # never the address


def test_new_ids_cost_addresses_and_a_full_store_gives_up_the_idle_first(tmp_path, monkeypatch):
    """10,100 fresh ids through /api/route pruned every real client. Now one address brings 32 new ids an
    hour, and when the store is full, ids that never measured nor self-checked go before those that did."""
    from router import fleet as fleet_module
    monkeypatch.setattr(fleet_module, "MAX_CLIENTS", 50)
    store = fleet_module.Fleet(tmp_path / "fleet.sqlite3")
    one_address = store.source_of("198.51.100.9")
    for i in range(100):
        store.report_probe(f"burst-{i:04d}", one_address, [("m", "v1")], "class", 1.0)
    assert store.versions() == [{"id": "m", "version": "v1", "clients": 32}]
    store.report_probe("burst-0000", one_address, [("m", "v2")], "class", 1.0)  # a known id still reports
    assert {"id": "m", "version": "v2", "clients": 1} in store.versions()
    loopback = store.source_of("127.0.0.1")  # this machine (or an unnamed same-host proxy): no allowance
    for i in range(40):
        store.report_probe(f"local-{i:04d}", loopback, [], None, None)
    honest = []
    for i in range(5):
        honest.append(f"honest-{i:04d}")
        source = store.source_of(f"192.0.2.{i}")
        store.report_probe(honest[-1], source, [("m", "v1")], "class", 0.9)
        store.report_self_check(honest[-1], source, "m", "v1", "adapter", True)
    for i in range(10_100):  # fresh ids from as many addresses, never measuring
        store.report_probe(f"fake-{i:05d}", store.source_of(f"10.{i // 250}.{i % 250}.1"), [("m", "v1")], None, None)
    with store._db() as db:
        kept = {row[0] for row in db.execute("SELECT client FROM clients")}
    assert len(kept) == 50 and set(honest) <= kept
    assert [(r["passed"], r["failed"]) for r in store.self_checks()] == [(5, 0)]
    assert store.calibrations(min_sources=3)[0]["sources"] == 6  # the honest five and the burst's address
    unlimited = fleet_module.Fleet(tmp_path / "unlimited.sqlite3", new_clients_per_hour=0)
    for i in range(40):
        unlimited.report_probe(f"burst-{i:04d}", unlimited.source_of("198.51.100.9"), [("m", "v1")], None, None)
    assert unlimited.versions() == [{"id": "m", "version": "v1", "clients": 40}]


def test_a_report_keeps_the_stores_connection_and_its_write_ahead_log(tmp_path):
    """Routing with a client id writes a report: a connection opened and closed per report checkpointed and
    deleted the WAL each time (disk flushes, 20-30 ms at p95); the thread's connection stays open instead."""
    import threading
    from router.fleet import Fleet
    store = Fleet(tmp_path / "fleet.sqlite3")
    store.report_probe("client-1", "source-1", [("m", "v1")], "class", 0.5)
    wal = tmp_path / "fleet.sqlite3-wal"
    assert wal.exists(), "the write-ahead log was checkpointed away: the connection was closed"
    seen = []
    other = threading.Thread(target=lambda: (store.report_probe("client-2", "source-2", [("m", "v1")], None, None),
                                             seen.append(store.versions())))
    other.start(), other.join()  # another server thread has its own connection and sees the same store
    assert seen == [[{"id": "m", "version": "v1", "clients": 2}]] and wal.exists()


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_source_and_otherwise_ignored(server, tiny_models,
                                                                                          tmp_path):
    """Three clients measuring, each with its own X-Forwarded-For: from the trusted proxy, three sources (the
    class is calibrated); sent straight to a server without one, the header is anyone's to write: one source."""
    entry = catalog_of(tiny_models)["models"][1]

    def calibrated_sources(url):
        for i, decode in enumerate([0.30, 0.34, 0.40]):
            assert requests.post(url + "/api/route", json=measuring_probe(entry, f"client-proxied-{i}", decode),
                                 headers={"X-Forwarded-For": f"192.0.2.{i + 1}"}, timeout=30).ok
        return [row["sources"] for row in requests.get(url + "/api/fleet", timeout=10).json()["calibration"]]

    with seam_server(tiny_models, SEAM_TRUSTED_PROXY="127.0.0.1", SEAM_FLEET_DB=str(tmp_path / "f.sqlite3")) as url:
        assert calibrated_sources(url) == [3]
    assert calibrated_sources(server) == []  # one source: below the 3 a class needs


# --- 5, 7, 9. schemas and other bad input ---------------------------------------------------------------

def schema_request(schema, **extra):
    return {**SHORT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            **extra}


@pytest.mark.parametrize("schema,says", [
    ({"enum": ["a" * 9000, "b" * 9000]}, "characters"),
    ({"enum": [f"{i}" + "a" * 900 for i in range(20)]}, "15000 in all"),
    (nested(100), "nests objects and lists"),
    ({"$ref": "#"}, "leads back to itself"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}, "not in properties"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_schemas_beyond_the_limits_are_refused_before_compiling(server, schema, says, stream):
    started = time.monotonic()
    r = chat(server, schema_request(schema, stream=stream))
    assert r.status_code == 400 and says in r.json()["error"]["message"], r.text
    assert r.json()["error"]["code"] == "invalid_schema"
    assert time.monotonic() - started < 2


def test_a_schema_that_compiles_too_long_is_stopped_while_others_are_served(tiny_models, tmp_path):
    slow = {"enum": [f"{i}" + "a" * 990 for i in range(15)]}  # within the limits, about half a second to compile
    assert len(json.dumps(slow)) < SCHEMA_LIMITS["max_chars"]
    with seam_server(tiny_models, SEAM_SCHEMA_TIMEOUT_S="0.1", SEAM_FLEET_DB=str(tmp_path / "f.db")) as url:
        assert chat(url, schema_request({"type": "object"})).status_code == 200  # starts a compiler
        with ThreadPoolExecutor(1) as pool:
            refused = pool.submit(chat, url, schema_request(slow))
            while not refused.done():
                started = time.monotonic()
                assert chat(url, SHORT).status_code == 200
                assert time.monotonic() - started < 1, "a plain chat waited behind a schema's compile"
            r = refused.result()
        assert r.status_code == 400 and "took longer than" in r.json()["error"]["message"], r.text
        assert chat(url, schema_request({"type": "object"})).status_code == 200  # a fresh compiler takes over


@pytest.mark.parametrize("body,says", [
    (b"[" * 50_000, "nested too deeply"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}', "NaN is not a JSON number"),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": 1e999}', "beyond the range"),
    (b'{"messages": [{"role": "user", "content": "' + b"word " * 198_000 + b'"}]}', "context window"),
])
def test_bad_bodies_get_a_4xx_error_object(server, body, says):
    started = time.monotonic()
    r = requests.post(server + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == 400 and says in r.json()["error"]["message"], r.text[:500]
    assert time.monotonic() - started < 2, "a bad body took seconds to refuse"


@pytest.mark.parametrize("path,body", [
    ("/api/self-check", '{"id": "%s", "version": "\\ud800", "passed": true, "client_id": "client-00000001"}'),
    ("/api/route", '{"schema_version": 1, "webgpu": {"available": true}, "benchmark": {"bandwidth_gbps": NaN}}'),
    # numbers whose prediction would overflow to Infinity, which is not JSON
    ("/api/route", '{"schema_version": 1, "webgpu": {"available": true}, "benchmark": {"bandwidth_gbps": 1e308}}'),
    ("/api/route", '{"schema_version": 1, "webgpu": {"available": false}, "network": {"downlink_mbps": 5e-324}}'),
    ("/api/outcome", '{"target": "cloud", "predicted": {"ttft_s": 1e-300}, "actual": {"ttft_s": 10}}'),
])
def test_bad_reports_get_a_4xx_error_object(server, tiny_models, path, body):
    body = body.replace("%s", catalog_of(tiny_models)["models"][0]["id"])
    r = requests.post(server + path, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["message"], r.text


def test_only_a_files_plain_path_is_served(server, tiny_models):
    entry = catalog_of(tiny_models)["models"][0]
    base = f"/models/{entry['id']}/{entry['version']}/"
    parts = urlsplit(server)
    for path, status in [(base + entry["files"]["config"], 200), (base + entry["files"]["cpu_library"] + "/.", 404),
                         (base + "./build-info.json", 404), (base + "x/../build-info.json", 404),
                         (base + "build-info.json", 404)]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", path)  # http.client sends the path as written, dots included
        assert conn.getresponse().status == status, path
        conn.close()


def test_pages_carry_security_headers(server):
    headers = requests.get(server + "/", timeout=10).headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_every_response_is_cross_origin_isolated_unless_turned_off(tiny_app, tiny_catalog):
    """COOP/COEP on the page, its scripts, its workers and the artifacts, so the page has SharedArrayBuffer
    for the CPU build's threads (test_tiny_llama.py runs them); SEAM_CROSS_ORIGIN_ISOLATED=0 leaves them out."""
    entry = next(m for m in tiny_catalog["models"] if "cpu" in m)
    paths = ["/", "/client/lib/engine/worker.js", "/client/lib/engine/cpu_thread.js", "/api/client",
             f"/models/{entry['id']}/{entry['version']}/{entry['files']['wasm_cpu_threads']}"]
    client = tiny_app.test_client()
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin", path
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp", path
        assert response.headers["Cross-Origin-Resource-Policy"] == "same-origin", path
    # (but /healthz, which a page of another origin reads opaquely to tell "not allowed" from "unreachable")
    assert client.get("/healthz").headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    tiny_app.config["CROSS_ORIGIN_ISOLATED"] = False
    try:
        assert "Cross-Origin-Embedder-Policy" not in client.get("/").headers
    finally:
        tiny_app.config["CROSS_ORIGIN_ISOLATED"] = True


def get_as(url, path, host, **headers):
    """A GET whose Host header names `host`: what a page of a rebound name sends."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", path, headers={"Host": host, **headers})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, json.loads(body) if response.getheader("Content-Type") == "application/json" else body


def test_a_loopback_server_answers_only_its_own_names(server):
    """A local install answered any Host: a page of another site whose name resolves to 127.0.0.1 (DNS
    rebinding) read /api/fleet and /metrics and could chat."""
    port = urlsplit(server).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]"):
        assert get_as(server, "/healthz", host)[0] == 200, host
    for host in (f"evil.example:{port}", "127.0.0.1.evil.example", "attacker"):
        status, body = get_as(server, "/api/fleet", host)
        assert status == 400 and body["error"]["code"] == "host_not_allowed", host
        assert "SEAM_ALLOWED_HOSTS" in body["error"]["message"]


def test_operator_views_need_the_operator_token_where_one_is_set(tiny_models, tmp_path):
    with seam_server(tiny_models, SEAM_FLEET_DB=str(tmp_path / "f.db"), SEAM_OPERATOR_TOKEN="op-secret",
                     SEAM_ALLOWED_HOSTS="seam.example, 127.0.0.1") as url:
        for path in ("/api/fleet", "/metrics"):
            for sent in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "op-secret"}):
                status, body = get_as(url, path, "seam.example", **sent)
                assert status == 401 and body["error"]["code"] == "operator_token_required", (path, sent)
            assert get_as(url, path, "seam.example", Authorization="Bearer op-secret")[0] == 200
        assert get_as(url, "/healthz", "seam.example")[0] == 200  # the rest stays open
        assert get_as(url, "/healthz", "localhost")[0] == 400  # only the names listed


def rss_mb(url) -> float:
    """The resident memory of the server process that serves `url` (found by its command line's port)."""
    port = str(urlsplit(url).port)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        if b"router" in command and port.encode() in command:
            return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    raise AssertionError(f"no server process on port {port}")


def test_the_servers_memory_plateaus_over_prompts_of_every_length(default_built, tmp_path):
    """The server's memory grew with each new prompt length and was never given back (481 to 1,418 MB after
    16 chats of ~950 tokens): TVM's pooled allocator kept a buffer of every size, glibc a hole of each in
    one arena per thread. Now it may grow after 5 chats only by the KV cache's pages it touches (a cache of
    one context window here) and under 100 MB more."""
    config = json.loads(next((default_built / catalog_of(default_built)["models"][0]["path"]).glob(
        "mlc-chat-config.json")).read_text())
    window, model = config["context_window_size"], config["model_config"]
    kv_mb = window * model["num_hidden_layers"] * 2 * model["num_key_value_heads"] * model["head_dim"] * 4 / 2**20
    words = "the quick brown fox jumps over the lazy dog and runs far into the woods".split()
    rng = random.Random(0)
    with seam_server(default_built, SEAM_FLEET_DB=str(tmp_path / "f.db"), SEAM_KV_CACHE_TOKENS=str(window)) as url:
        for i in range(50):
            content = " ".join(rng.choice(words) for _ in range(rng.randint(20, 900)))
            assert chat(url, {"messages": [{"role": "user", "content": content}], "max_tokens": 4}).ok
            if i == 4:
                after_5 = rss_mb(url)
        after_50 = rss_mb(url)
    print(f"RSS after 5 chats {after_5:.0f} MB, after 50 {after_50:.0f} MB; KV cache {kv_mb:.0f} MB")
    assert after_50 <= after_5 + kv_mb + 96, (after_5, after_50, kv_mb)


# --- 6. overload --------------------------------------------------------------------------------------

def test_three_times_the_capacity_gets_prompt_503s_and_health_stays_fast(server):
    """With 8 chats in flight /healthz took 7.5 s, and 12 never saw a 503: the limit sat above the threads."""
    with ThreadPoolExecutor(3 * CAPACITY) as pool:
        def timed_chat(i):  # each client at an address of its own, under the limit one address has
            started = time.monotonic()
            r = session_from(f"127.0.1.{i + 1}").post(server + "/v1/chat/completions", json=LONG, timeout=60)
            return r, time.monotonic() - started
        answers = [pool.submit(timed_chat, i) for i in range(3 * CAPACITY)]
        time.sleep(0.3)
        health, metrics = timed_get(server, "/healthz"), timed_get(server, "/metrics")
        results = [a.result() for a in answers]
    assert health < 1 and metrics < 1, (health, metrics)
    refused = [(r, s) for r, s in results if r.status_code == 503]
    assert len(refused) >= CAPACITY, [r.status_code for r, _ in results]
    assert all(r.headers.get("Retry-After", "").isdigit() and r.json()["error"]["code"] == "server_busy"
               for r, _ in refused)
    assert max(s for _, s in refused) < 1, "a refused chat waited before it was refused"
    assert all(r.status_code == 200 for r, _ in results if r.status_code != 503)


# --- 8. upstream errors -------------------------------------------------------------------------------

KEY = "sk-test-upstream-key-0123456789abcdef"


@contextmanager
def fake_upstream(status: int, body: bytes, content_type="application/json"):
    """An OpenAI-compatible upstream that answers every chat with `body` (with `{auth}` replaced by the
    Authorization header it received: an upstream that echoes the key back)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = body.replace(b"{auth}", self.headers.get("Authorization", "").encode())
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/v1"
    finally:
        httpd.shutdown()


def echoes(key: str) -> list[str]:
    """The key as an upstream may echo it back: as sent, in capitals, URL- and base64-encoded, a long piece."""
    return [key, key.upper(), quote(key, safe=""), base64.b64encode(f"Bearer {key}".encode()).decode(), key[3:20]]


def test_upstream_error_bodies_are_scrubbed_and_bad_streams_end_cleanly(tiny_models, tmp_path):
    echo = json.dumps({"error": {"message": "Invalid API key in header: {auth}. Also saw " + " ".join(echoes(KEY))}})
    garbage = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\ndata: {not json\n\n'
    for status, body, content_type in [(401, echo.encode(), "application/json"), (200, garbage, "text/event-stream")]:
        with fake_upstream(status, body, content_type) as upstream, \
                seam_server(tiny_models, SEAM_UPSTREAM_BASE_URL=upstream, SEAM_UPSTREAM_API_KEY=KEY,
                            SEAM_FLEET_DB=str(tmp_path / "f.db")) as url:
            plain = chat(url, SHORT)
            streamed = chat(url, {**SHORT, "stream": True})
            for r in (plain, streamed):
                assert not any(form in r.text for form in echoes(KEY)) and "Bearer" not in r.text, r.text
            assert plain.status_code == 502 and plain.json()["error"]["code"] == "upstream_error"
            if status == 401:
                assert streamed.status_code == 502
            else:
                events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
                assert events[-1] == "[DONE]" and "malformed" in json.loads(events[-2])["error"]["message"]
                assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Hel"


def test_an_upstream_that_echoes_the_key_inside_an_answer_is_scrubbed(tiny_models, tmp_path):
    """The key was kept out of an upstream's errors, but passed on inside a 200's answer."""
    text = "Your key: " + " and ".join(echoes(KEY)) + ". Done."
    events = b"".join(b"data: " + json.dumps({"choices": [{"delta": {"content": text[i:i + 5]}}]}).encode() + b"\n\n"
                      for i in range(0, len(text), 5)) + b"data: [DONE]\n\n"
    with fake_upstream(200, events, "text/event-stream") as upstream, \
            seam_server(tiny_models, SEAM_UPSTREAM_BASE_URL=upstream, SEAM_UPSTREAM_API_KEY=KEY,
                        SEAM_FLEET_DB=str(tmp_path / "f.db")) as url:
        plain = chat(url, SHORT).json()["choices"][0]["message"]["content"]
        streamed = chat(url, {**SHORT, "stream": True}).text
    for answer in (plain, streamed):
        assert not any(form in answer for form in echoes(KEY)), answer
    assert plain.startswith("Your key: [redacted]") and plain.endswith(". Done.")
