"""One engine for all of a user's tabs, and a page that opens and answers with the server unreachable.

Real Chromium (WebGPU on SwiftShader) and Firefox ESR, the tiny random Llama, the Flask app over real HTTP.
Tabs are pages of one browser context (one profile): the engine runs in a SharedWorker they all connect to,
and the tests count what its host did (loads, self-checks, abandoned answers) and what the server was asked
(model files, self-check reports). The offline tests let the page's service worker run (the other tests
block it: tests/conftest.py), stop the server, and start it again on the same port.
"""
import json
import time
from collections import Counter

import requests
from playwright.sync_api import expect

from tests.support.browsers import PageWatch
from tests.support.firefox import open_firefox
from tests.support.models import TINY
from tests.support.pages import LOAD_TIMEOUT_MS, ChatPage

VARIANT = f"{TINY}-q4f32_1"  # SwiftShader has no shader-f16
# The router gives these Chromium tabs the CPU build (faster than SwiftShader). On several threads it would
# run in each tab's own engine (Chromium's SharedWorker has no shared memory: test_browser_cpu.py); on one,
# the tabs share it.
SHARING = "?threads=1"
GREEDY = {"temperature": 0, "max_tokens": 6, "system": "Be brief."}
FRANCE = "What is the capital of France?"
# What a page sees while its server is stopped: refused connections, and a kept-alive one reset.
SERVER_GONE_ERRORS = ["net::ERR_CONNECTION_REFUSED", "net::ERR_CONNECTION_RESET", "net::ERR_SOCKET_NOT_CONNECTED",
                      "net::ERR_FAILED", "Failed to fetch"]

HOST_STATS = "() => window.seam.test.hostStats()"

LONG = {"messages": [{"role": "user", "content": "Tell me a long story."}], "temperature": 0, "max_tokens": 960}

# Starts `count` long answers in this tab at once (the host queues them) and returns once the first piece of
# the first arrived; the answers go on, and each records when it ended in window.ended.
START_LONG_ANSWERS = """async ({ count, request }) => {
  window.ended = window.ended ?? [];
  let started;
  const first = new Promise((resolve) => { started = resolve; });
  for (let n = 0; n < count; n++) (async () => {
    const stream = await window.seam.chat.completions.create({ ...request, stream: true });
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) started();
    window.ended.push({ n, at: Date.now() });
  })();
  await first;
}"""
ENDED = "() => window.ended ?? []"


def until(check, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def open_tab(context, url, watches, **settings) -> ChatPage:
    page = context.new_page()
    watches.append(PageWatch(page, SERVER_GONE_ERRORS))
    return ChatPage(page, url).open(**settings)


def model_requests(server) -> Counter:
    """How often each part of each model file was asked for."""
    return Counter((path, byte_range) for path, byte_range in server.ranges if path.startswith("/models/"))


def test_two_tabs_share_one_engine_and_a_tab_that_closes_mid_answer_frees_it(page, tiny_server):
    """The second tab's model is the first tab's: one download, one load, one self-check (counted by the host
    and by the server's reports), both answer alike from it; when a tab closes in the middle of an answer, the
    host drops that answer and the other tab's next one runs at once."""
    watches = []
    first = ChatPage(page, tiny_server.url + SHARING).open(preference="local_only", **GREEDY)
    first.wait_until_loaded()
    second = open_tab(page.context, tiny_server.url + SHARING, watches)  # the settings are the first tab's, kept
    engine = second.wait_until_loaded()
    assert engine["id"] == VARIANT
    stats = page.evaluate(HOST_STATS)
    assert (stats["host"], stats["tabs"], stats["loads"], stats["self_checks"]) == ("shared", 2, 1, 1), stats
    assert tiny_server.paths.count("/api/self-check") == 1
    asked = model_requests(tiny_server)
    assert asked and max(asked.values()) == 1, [part for part, n in asked.items() if n > 1]
    assert second.page.evaluate("window.seam.status().engine_host")["kind"] == "shared"

    answers = [first.ask(FRANCE), second.ask(FRANCE)]
    assert [a["where"] for a in answers] == ["browser", "browser"]
    assert answers[0]["text"] == answers[1]["text"]
    assert all("engine shared by 2 tabs" in a["stats"] for a in answers), [a["stats"] for a in answers]

    # Taking turns: three answers of the first tab queued, then one of the second: it runs second, not last.
    page.evaluate(START_LONG_ANSWERS, {"count": 3, "request": LONG})
    second.page.evaluate(START_LONG_ANSWERS, {"count": 1, "request": LONG})
    page.wait_for_function("() => window.ended?.length === 3", timeout=120_000)
    second.page.wait_for_function("() => window.ended?.length === 1", timeout=120_000)
    firsts = sorted(e["at"] for e in page.evaluate(ENDED))
    seconds = second.page.evaluate(ENDED)
    assert firsts[0] <= seconds[0]["at"] <= firsts[1], (firsts, seconds)

    # A tab that closes in the middle of its answers: the running one stops, the queued ones are dropped.
    page.evaluate(START_LONG_ANSWERS, {"count": 8, "request": LONG})
    until(lambda: page.evaluate(HOST_STATS)["queued"] >= 5)  # one answering, five or more waiting
    page.close()
    after = second.ask("And of Italy?")
    assert (after["where"], after["state"], after["finish_reason"]) == ("browser", "done", "length")
    stats = second.page.evaluate(HOST_STATS)
    assert (stats["tabs"], stats["loads"]) == (1, 1) and stats["abandoned"] >= 5, stats
    assert "engine shared by 1 tab" in after["stats"]
    assert not [p for w in watches for p in w.problems()]


GARBAGE = """async ({ build, messages }) => {
  // Connections of their own to the shared host, each sending one thing no tab of Seam's would.
  const answers = [];
  for (const message of messages) {
    const port = new SharedWorker("/client/lib/engine/worker.js", { type: "module", name: `seam-engine@${build}` }).port;
    answers.push(await new Promise((resolve) => {
      port.onmessage = ({ data }) => resolve(data);
      port.postMessage(message);
      setTimeout(() => resolve(null), 10_000);
    }));
  }
  return answers;
}"""


def test_garbage_ends_only_its_connection_and_a_crashed_engine_leaves_each_tab_its_own(page, tiny_server):
    """A connection that breaks the protocol is refused and closed while the tabs go on sharing the engine;
    when the shared engine itself ends, every tab moves to an engine of its own, says why, and answers."""
    watches = []
    first = ChatPage(page, tiny_server.url + SHARING).open(preference="local_only", **GREEDY)
    first.wait_until_loaded()
    second = open_tab(page.context, tiny_server.url + SHARING, watches)
    second.wait_until_loaded()
    build = requests.get(tiny_server.url + "api/client").json()["build"]
    garbage = [42, {"type": "generate", "id": "x", "key": 5}, {"type": "no-such-thing"}, {"type": "load", "key": "k"}]
    refused = page.evaluate(GARBAGE, {"build": build, "messages": garbage})
    assert [r["type"] for r in refused] == ["refused"] * 4, refused
    assert "a message must be an object with a type" in refused[0]["message"]
    assert 'no message of type "no-such-thing"' in refused[2]["message"]
    assert "a load message without the fields it needs" in refused[3]["message"]
    still = [first.ask(FRANCE), second.ask(FRANCE)]
    assert all(a["where"] == "browser" and "engine shared by 2 tabs" in a["stats"] for a in still), still

    page.evaluate("window.seam.test.crashSharedHost()")
    for tab in (first, second):
        tab.page.wait_for_function("() => window.seam.status().engine_host.kind === 'dedicated'", timeout=30_000)
        host = tab.page.evaluate("window.seam.status().engine_host")
        assert "the shared engine stopped" in host["why"], host
        tab.page.wait_for_function("() => window.seam.status().engine?.state === 'ready'", timeout=LOAD_TIMEOUT_MS)
    alone = [first.ask("And of Italy?"), second.ask("And of Italy?")]
    assert [a["where"] for a in alone] == ["browser", "browser"] and alone[0]["text"] == alone[1]["text"]
    assert all("this tab's own engine (the shared engine could not go on: the shared engine stopped)" in a["stats"]
               for a in alone), [a["stats"] for a in alone]
    assert not [p for w in watches for p in w.problems()]


def test_a_tab_asked_to_keep_its_engine_to_itself_runs_its_own(page, tiny_server):
    chat = ChatPage(page, tiny_server.url + "?engine=own").open(preference="local_only", **GREEDY)
    chat.wait_until_loaded()
    answer = chat.ask(FRANCE)
    assert answer["where"] == "browser"
    assert "this tab's own engine (the page asked for an engine of its own (sharedEngine: false))" in answer["stats"]
    assert page.evaluate(HOST_STATS)["host"] == "dedicated"


# --- Firefox ----------------------------------------------------------------------------------------

READY_IN_FIREFOX = """async () => {
  const until = async (check) => { while (!(await check())) await new Promise((r) => setTimeout(r, 200)); };
  await until(() => window.seam);
  await window.seam.configure({ preference: "local_only" });
  await until(() => window.seam.status().engine?.state === "ready");
  return { host: window.seam.status().engine_host, stats: await window.seam.test.hostStats() };
}"""


def test_firefox_shares_one_engine_between_its_tabs(tiny_server):
    """Firefox ESR gives a module SharedWorker WebGPU (lavapipe) and Web Locks: its tabs share one engine too."""
    with open_firefox() as firefox:
        firefox.goto(tiny_server.url)
        one = firefox.evaluate(READY_IN_FIREFOX)
        firefox.new_tab(tiny_server.url)
        two = firefox.evaluate(READY_IN_FIREFOX)
    print(json.dumps([one, two], indent=1))
    assert one["host"]["kind"] == "shared" and two["host"]["kind"] == "shared"
    assert (two["stats"]["tabs"], two["stats"]["loads"], two["stats"]["self_checks"]) == (2, 1, 1), two["stats"]


# --- offline ----------------------------------------------------------------------------------------

SHELL_STATE = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const build = await new Promise((resolve) => {
    navigator.serviceWorker.addEventListener("message", ({ data }) => data.type === "build" && resolve(data.build), { once: true });
    registration.active.postMessage({ type: "build?" });
  });
  return { page: document.querySelector('meta[name="seam-build"]').content, worker: build,
           controlled: Boolean(navigator.serviceWorker.controller),
           caches: (await caches.keys()).filter((name) => name.startsWith("seam-shell-")).sort(),
           waiting: JSON.parse(localStorage.getItem("seam.waiting-reports") ?? "[]").map((r) => new URL(r.endpoint).pathname) };
}"""


def offline_context(browser):
    return browser.new_context(service_workers="allow")


def test_after_one_visit_the_page_answers_offline_and_its_reports_wait_for_the_server(browser, app_server, tiny_models):
    """First visit; the server stops; a reload opens the page from its service worker and the browser answers,
    saying the server is unreachable; a self-check run meanwhile waits, and reaches the server once it is back."""
    context = offline_context(browser)
    page = context.new_page()
    watch = PageWatch(page, SERVER_GONE_ERRORS)
    server = app_server(tiny_models)
    port = server.server.server_port
    chat = ChatPage(page, server.url).open(preference="local_only", **GREEDY)
    chat.wait_until_loaded()
    online = chat.ask(FRANCE)
    assert page.evaluate(SHELL_STATE)["controlled"]
    assert server.paths.count("/api/self-check") == 1

    server.close()
    # This browser forgets that the model passed its check here: the reload checks it again, offline.
    page.evaluate("localStorage.removeItem('seam.self-checks')")
    page.reload()
    expect(chat.route).to_contain_text("the server is unreachable, so the answer is local", timeout=60_000)
    offline = chat.ask(FRANCE)
    assert (offline["where"], offline["text"]) == ("browser", online["text"])
    shell = page.evaluate(SHELL_STATE)
    assert shell["controlled"] and shell["page"] == shell["worker"]
    assert shell["waiting"] == ["/api/self-check"]

    back = app_server(tiny_models, port=port)
    again = chat.ask("And of Italy?")
    assert again["where"] == "browser"
    page.wait_for_function("() => JSON.parse(localStorage.getItem('seam.waiting-reports') ?? '[]').length === 0", timeout=30_000)
    assert back.paths.count("/api/self-check") == 1
    assert not watch.problems()
    context.close()


def test_a_new_build_replaces_the_old_shell_and_offline_never_mixes_them(browser, app_server, tiny_models):
    """Build a, visited; offline, build a's page. Build b on the same port, visited online: its page at once, and
    its shell replaces a's (one cache). Offline again: build b's page, from b's cache alone."""
    context = offline_context(browser)
    page = context.new_page()
    watch = PageWatch(page, SERVER_GONE_ERRORS)
    old = app_server(tiny_models, SHELL_BUILD="build-a")
    port = old.server.server_port
    page.goto(old.url)
    first = page.evaluate(SHELL_STATE)
    assert (first["page"], first["worker"], first["caches"]) == ("build-a", "build-a", ["seam-shell-build-a"])
    old.close()
    page.reload()
    assert page.evaluate(SHELL_STATE)["page"] == "build-a"

    new = app_server(tiny_models, port=port, SHELL_BUILD="build-b")
    page.reload()
    assert page.evaluate("document.querySelector('meta[name=\"seam-build\"]').content") == "build-b"  # online: the server's
    until(lambda: page.evaluate("async () => (await caches.keys()).filter((n) => n.startsWith('seam-shell-'))") ==
          ["seam-shell-build-b"])
    new.close()
    page.reload()
    offline = page.evaluate(SHELL_STATE)
    assert (offline["page"], offline["worker"], offline["caches"]) == ("build-b", "build-b", ["seam-shell-build-b"])
    assert not watch.problems()
    context.close()
