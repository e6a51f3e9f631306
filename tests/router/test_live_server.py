"""Real processes over real HTTP: the server (waitress, as `make serve` runs it) serving the real model,
the official `openai` client, and a second instance of this server using the first as its
OpenAI-compatible upstream."""
import json
import socket
import threading
import time
from contextlib import contextmanager

import openai
import pytest
import requests

from tests.support.models import catalog_of
from tests.support.servers import connect, free_port, raw_post, seam_server, session_from

SECRET = "sk-upstream-secret-do-not-leak-42"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(default_built):
    with seam_server(default_built) as url:
        yield url


@pytest.fixture(scope="module")
def proxy(default_built, server):
    """A second instance whose cloud path is the first one, reached as an OpenAI-compatible upstream."""
    with seam_server(default_built, SEAM_UPSTREAM_BASE_URL=server + "/v1",
                     SEAM_UPSTREAM_API_KEY=SECRET) as url:
        yield url


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_a_fresh_server_measures_its_engine_before_any_chat(server):
    """(First in this module: no chat has run on the server yet.) The warm-up answer at startup gives the
    router a measured cloud; before it, the policy's assumption, said as such."""
    probe = {"schema_version": 1, "webgpu": {"available": False}, "preference": "auto", "prompt_tokens": 12,
             "cached_models": []}
    deadline = time.monotonic() + 120
    while (cloud := requests.post(server + "/api/route", json=probe, timeout=10).json()["predictions"]["cloud"])[
            "source"] == "assumed" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cloud["source"] == "measured_by_server" and cloud["tokens_per_s"] > 1.0, cloud


def test_openai_client_non_streaming_and_streaming(server):
    answer = client(server).chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION,
                                                    temperature=0, max_tokens=16)
    assert answer.choices[0].message.content == "The capital of France is Paris."
    assert answer.choices[0].finish_reason == "stop" and answer.usage.completion_tokens == 7
    stream = client(server).chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION, temperature=0,
                                                    max_tokens=16, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital of France is Paris."
    assert chunks[-1].usage.completion_tokens == 7


def test_openai_client_sees_errors_as_exceptions(server):
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="nope", messages=QUESTION)
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION, temperature=9)


def test_concurrent_requests_queue_and_the_server_keeps_serving(server):
    results = []

    def ask(source):  # four clients, each at its own address (one address may hold only 2 chats)
        r = session_from(source).post(server + "/v1/chat/completions", timeout=300,
                                      json={"messages": QUESTION, "temperature": 0, "max_tokens": 4})
        results.append((r.status_code, r.json()["choices"][0]["message"]["content"]))

    threads = [threading.Thread(target=ask, args=(f"127.0.2.{i + 1}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in results] == [200] * 4
    assert len({content for _, content in results}) == 1  # greedy: the same answer every time
    assert requests.get(server + "/healthz", timeout=5).json()["status"] == "ok"


def test_client_disconnecting_mid_stream_frees_the_engine(server):
    body = {"messages": QUESTION, "max_tokens": 400, "temperature": 1.0, "seed": 1, "stream": True}
    with requests.post(server + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line).startswith(b"data: ")
    # Both workers must still answer; a leaked engine lock would block this for the whole 400 tokens.
    for _ in range(2):
        r = requests.post(server + "/v1/chat/completions", timeout=120,
                          json={"messages": QUESTION, "temperature": 0, "max_tokens": 2})
        assert r.status_code == 200


def test_metrics_add_up_every_worker(server):
    text = requests.get(server + "/metrics", timeout=5).text
    served = [line for line in text.splitlines() if line.startswith("seam_tokens_served_total{")]
    assert served and float(served[0].split()[-1]) > 0


def test_upstream_path_answers_like_the_upstream(server, proxy):
    direct = client(server).chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION,
                                                    temperature=0, max_tokens=16)
    via = client(proxy).chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION,
                                                temperature=0, max_tokens=16)
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.usage.completion_tokens == direct.usage.completion_tokens
    streamed = client(proxy).chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION,
                                                     temperature=0, max_tokens=16, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == direct.choices[0].message.content


def test_upstream_errors_pass_through_and_the_key_never_shows(proxy):
    r = requests.post(proxy + "/v1/chat/completions", json={"model": "nope", "messages": QUESTION}, timeout=60)
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    for path in ("/", "/healthz", "/v1/models", "/metrics", "/models/manifest.json"):
        assert SECRET not in requests.get(proxy + path, timeout=10).text
    assert SECRET not in r.text


@contextmanager
def silent_tcp_server():
    """Accepts connections and never answers: an upstream that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_upstream_down_is_502_and_slow_is_504(default_built):
    with seam_server(default_built, SEAM_UPSTREAM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1") as url:
        r = requests.post(url + "/v1/chat/completions", json={"messages": QUESTION}, timeout=60)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    with silent_tcp_server() as hanging, seam_server(default_built, SEAM_UPSTREAM_BASE_URL=hanging,
                                                     SEAM_UPSTREAM_TIMEOUT_S="1") as url:
        r = requests.post(url + "/v1/chat/completions", json={"messages": QUESTION}, timeout=60)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert requests.get(url + "/healthz", timeout=5).ok


def test_a_busy_server_sends_answers_to_browsers_that_hold_the_model(default_built, tmp_path):
    """With the server's chats at their limit, a capable browser holding the model answers itself, and the
    operator sees the offload in /metrics."""
    entry = next(m for m in catalog_of(default_built)["models"] if m["quantization"] == "q4f32_1")
    probe = {"schema_version": 1, "preference": "auto", "benchmark": {"bandwidth_gbps": 0.05},  # a slow device
             "webgpu": {"available": True, "features": [], "limits": {"maxStorageBufferBindingSize": 1 << 30,
                                                                      "maxBufferSize": 1 << 30}},
             "cached_models": [{"id": entry["id"], "version": entry["version"]}]}
    with seam_server(default_built, SEAM_MAX_QUEUE="1", SEAM_FLEET_DB=str(tmp_path / "f.db")) as url:
        idle = requests.post(url + "/api/route", json=probe, timeout=10).json()
        assert (idle["target"], idle["reasons"][0]["code"]) == ("cloud", "browser_too_slow")
        with connect(url) as sock:
            body = json.dumps({"messages": QUESTION, "temperature": 2.0, "seed": 1, "max_tokens": 1500}).encode()
            sock.sendall(raw_post(url, "/v1/chat/completions", body))
            for _ in range(100):  # until the long answer holds the only place
                if "seam_chats_in_flight 1.0" in requests.get(url + "/metrics", timeout=10).text:
                    break
                time.sleep(0.1)
            busy = requests.post(url + "/api/route", json=probe, timeout=10).json()
        assert (busy["target"], busy["reasons"][0]["code"]) == ("browser", "server_busy"), busy["reasons"]
        metrics = requests.get(url + "/metrics", timeout=10).text
        assert 'seam_route_decisions_total{reason="server_busy",target="browser"} 1.0' in metrics
