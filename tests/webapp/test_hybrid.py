"""The hybrid seam end to end: one conversation, answered by the browser or the server, handed over
mid-answer when one path fails, with the model downloaded, checked and replaced in the background.

Real Chromium (SwiftShader WebGPU), the real default model, the Flask app over real HTTP. Faults are
real too: the server drops or spoils responses (tests/conftest.py `Faults`), the page's test hook
destroys the GPU device, the network path to the server's API is cut with Playwright's routing.
"""
import json

import pytest
import requests
from playwright.sync_api import expect

from tests.harness import CHROMIUM, CHROMIUM_FLAGS
from tests.webapp.chat_page import LOAD_TIMEOUT_MS, ChatPage
from tests.webapp.helpers import MODEL, models_subset, server_answer

VARIANT = f"{MODEL}-q4f32_1"  # SwiftShader has no shader-f16
SYSTEM = "Be brief."
GREEDY = {"temperature": 0, "max_tokens": 6, "system": SYSTEM}
FRANCE = "What is the capital of France?"


def asked(*questions_and_answers, question):
    history = [{"role": "system", "content": SYSTEM}]
    for q, a in questions_and_answers:
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return history + [{"role": "user", "content": question}]


def cached_urls(page) -> list[str]:
    return page.evaluate("""async () => (await (await caches.open("seam-models")).keys()).map((r) => r.url)""")


def set_catalog(models_dir, **changes) -> dict:
    """Rewrite the served catalog's one entry, as `make build-model` would (atomically)."""
    catalog = json.loads((models_dir / "manifest.json").read_text())
    catalog["models"][0].update(changes)
    (models_dir / ".manifest.tmp").write_text(json.dumps(catalog))
    (models_dir / ".manifest.tmp").replace(models_dir / "manifest.json")
    return catalog["models"][0]


@pytest.fixture
def page_without_webgpu(browser_type):
    """A page in Chromium launched without WebGPU (as in browsers that lack it), closed after the test."""
    no_webgpu = [flag for flag in CHROMIUM_FLAGS if flag != "--enable-unsafe-webgpu"]
    browser = browser_type.launch(executable_path=CHROMIUM, args=no_webgpu, headless=True)
    page = browser.new_page()
    assert page.evaluate("async () => !navigator.gpu || !(await navigator.gpu.requestAdapter())")
    yield page
    browser.close()


def test_without_webgpu_the_server_answers_the_whole_chat(page_without_webgpu, default_built, app_server):
    server = app_server(default_built)
    chat = ChatPage(page_without_webgpu, server.url).open(**GREEDY)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    expect(chat.route).to_contain_text("this browser cannot run the model")
    expect(chat.notice).to_contain_text("this browser has no usable WebGPU")
    first = chat.ask(FRANCE)
    second = chat.ask("And of Italy?")
    for shown, history in ((first, asked(question=FRANCE)), (second, asked((FRANCE, first["text"]), question="And of Italy?"))):
        expected = server_answer(server.url, history, GREEDY["max_tokens"])["choices"][0]
        assert (shown["where"], shown["state"]) == ("cloud", "done")
        assert shown["text"] == expected["message"]["content"] and shown["stats"].startswith("server · ")
    assert not any(p.startswith(f"/models/{VARIANT}/") for p in server.paths)  # nothing downloaded


def test_a_probe_that_claims_webgpu_it_lacks_ends_on_the_server(page_without_webgpu, default_built, app_server):
    """The report says WebGPU works; the engine finds none, says so, and the server answers."""
    server = app_server(default_built)

    def lie(route):
        report = json.loads(route.request.post_data)
        report["webgpu"] = {"available": True, "features": [], "limits": {}}
        route.continue_(post_data=json.dumps(report))

    page_without_webgpu.route("**/api/route", lie)
    chat = ChatPage(page_without_webgpu, server.url).open(**GREEDY)
    expect(chat.notice).to_contain_text("no usable WebGPU", timeout=60_000)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    expect(chat.route).to_contain_text("cannot run")
    shown = chat.ask(FRANCE)
    assert (shown["where"], shown["state"]) == ("cloud", "done")
    assert shown["text"] == server_answer(server.url, asked(question=FRANCE), GREEDY["max_tokens"])["choices"][0]["message"]["content"]


def test_first_visit_answers_from_the_server_then_the_browser_then_follows_new_versions(page, default_built, app_server, tmp_path):
    models = models_subset(default_built, tmp_path / "models", VARIANT)
    server = app_server(models)
    chat = ChatPage(page, server.url).open(**GREEDY)
    # First visit: the server answers while the model downloads in the background, with progress shown.
    decision = page.evaluate("window.seamLastDecision")
    assert (decision["target"], decision["reasons"][0]["code"], decision["prefetch"]) == ("cloud", "not_downloaded", True)
    expect(page.locator("#loading")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text(" MB")
    first = chat.ask(FRANCE)
    assert first["where"] == "cloud"
    assert first["text"] == server_answer(server.url, asked(question=FRANCE), 6)["choices"][0]["message"]["content"]

    # Downloaded, verified and self-checked: the router now sends answers to this browser.
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    second = chat.ask("And of Italy?")
    assert second["where"] == "browser"
    expected = server_answer(server.url, asked((FRANCE, first["text"]), question="And of Italy?"), 6)
    assert second["text"] == expected["choices"][0]["message"]["content"]
    v1 = page.evaluate("window.seamLastDecision.version")
    fleet = requests.get(server.url + "api/fleet", timeout=10).json()
    assert fleet["cached"] == [{"id": VARIANT, "version": v1, "clients": 1}]
    assert [(c["version"], c["passed"], c["failed"]) for c in fleet["self_checks"]] == [(v1, 1, 0)]

    # A rebuild publishes a new version: the page learns it, the server answers while the new version
    # downloads, and the old one is deleted once the new one is checked.
    v2 = "a" * 16
    set_catalog(models, version=v2)
    server.paths.clear()
    page.reload()
    expect(chat.route).to_have_attribute("data-reason", "update_available", timeout=60_000)
    expect(chat.route).to_contain_text(f"{v1} -> {v2}")
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    assert page.evaluate("window.seamLastDecision.version") == v2
    assert any(p.startswith(f"/models/{VARIANT}/{v2}/params_shard") for p in server.paths)
    urls = cached_urls(page)
    assert any(f"/{v2}/" in u for u in urls) and not any(f"/{v1}/" in u for u in urls)
    versions = requests.get(server.url + "api/fleet", timeout=10).json()["cached"]
    assert versions == [{"id": VARIANT, "version": v2, "clients": 1}]

    # A rebuild the catalog marks compatible (same weights): the cached version stays, nothing downloads.
    set_catalog(models, version="b" * 16, compatible_versions=[v2])
    server.paths.clear()
    page.reload()
    expect(chat.route).to_have_attribute("data-reason", "compatible_cached", timeout=60_000)
    assert chat.wait_until_loaded()["id"] == VARIANT
    assert page.evaluate("window.seam.loaded.model.version") == v2
    assert not [p for p in server.paths if p.startswith(f"/models/{VARIANT}/")]


def test_each_path_takes_over_when_the_other_fails_mid_answer(page, default_built, app_server, expected_console_errors):
    server = app_server(default_built, test_hooks=True)
    # What Chromium logs for the cut below, and what tvmjs logs when the hook destroys the device.
    expected_console_errors += ["net::ERR_CONNECTION_REFUSED", "Device lost, calling Instance.dispose()"]
    # The server's API is unreachable while the model is not ready yet: the browser answers once it is.
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    chat = ChatPage(page, server.url).open(**GREEDY)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    first = chat.ask(FRANCE)
    expect(chat.notice).to_contain_text("The server could not answer")
    assert first["where"] == "browser" and first["state"] == "done"
    assert first["text"] == server_answer(server.url, asked(question=FRANCE), 6)["choices"][0]["message"]["content"]
    page.unroute("**/v1/chat/completions")

    # The GPU is lost three tokens into an answer: the server goes on from the text already shown.
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    chat.new_chat()
    chat.settings(max_tokens=12)
    page.evaluate("window.seam.test.loseDeviceAfter(3)")
    shown = chat.ask(FRANCE)
    expected = server_answer(server.url, asked(question=FRANCE), 12)["choices"][0]
    assert shown["text"] == expected["message"]["content"]  # nothing lost, nothing repeated
    assert shown["state"] == "done" and shown["finish_reason"] == expected["finish_reason"]
    assert page.locator("#messages .message.assistant").last.get_attribute("data-handoff") == "browser-to-cloud"
    assert shown["stats"].startswith("browser, then server")
    expect(chat.notice).to_contain_text("GPU failed")
    expect(chat.notice).to_contain_text("lost")
    # The router knows the browser failed: the next answers come from the server.
    expect(chat.route).to_have_attribute("data-target", "cloud", timeout=60_000)
    assert "failed on this device" in json.dumps(page.evaluate("window.seamLastDecision.reasons"))


def test_a_failed_self_check_routes_to_the_server_and_is_reported(page, default_built, app_server, tmp_path):
    models = models_subset(default_built, tmp_path / "models", VARIANT)
    catalog = json.loads((models / "manifest.json").read_text())
    check = catalog["models"][0]["self_check"]
    set_catalog(models, self_check={**check, "golden_token_ids": [check["golden_token_ids"][0] + 1,
                                                                  *check["golden_token_ids"][1:]]})
    server = app_server(models)
    chat = ChatPage(page, server.url).open(**GREEDY)
    expect(chat.notice).to_contain_text("self-check failed", timeout=LOAD_TIMEOUT_MS)
    expect(chat.route).to_have_attribute("data-target", "cloud", timeout=60_000)
    expect(chat.route).to_contain_text("cannot run")
    assert "failed on this device (self-check failed" in json.dumps(page.evaluate("window.seamLastDecision.reasons"))
    checks = requests.get(server.url + "api/fleet", timeout=10).json()["self_checks"]
    assert [(c["id"], c["passed"], c["failed"]) for c in checks] == [(VARIANT, 0, 1)]
    assert chat.ask(FRANCE)["where"] == "cloud"
    # Remembered across visits: the device is not trusted with this version again.
    page.reload()
    expect(chat.route).to_have_attribute("data-target", "cloud", timeout=60_000)
    assert page.evaluate("window.seamLastReport.unreliable_models")[0]["id"] == VARIANT


LOAD = """async (id) => {
    const model = window.seam.config.models.find((m) => m.id === id);
    try { await window.seam.browserEngine().load(model); return "loaded"; }
    catch (error) { return `${error.kind}: ${error.message}`; }
}"""


def test_downloads_resume_and_refetch_what_arrived_wrong(page, default_built, app_server):
    server = app_server(default_built)
    base = f"/models/{VARIANT}/"
    # A reload in the middle of a shard: the parts stored so far stay, the rest comes by Range.
    server.faults.add("params_shard_1.bin", "stall", 10_000_000)
    page.goto(server.url)
    page.evaluate("""(id) => { window.seam.browserEngine().load(window.seam.config.models.find((m) => m.id === id))
                                 .catch(() => {}); }""", VARIANT)
    for _ in range(240):  # until the second part of shard 1 is stored
        if any("params_shard_1.bin?seam-part=4194304" in u for u in cached_urls(page)):
            break
        page.wait_for_timeout(500)
    else:
        pytest.fail(f"shard 1's parts were never stored: {cached_urls(page)}")
    page.reload()
    # A dropped connection: the download goes on from the last stored part by itself; then that rest
    # arrives spoiled: the sha256 finds it, and the shard is fetched again whole.
    server.faults.add("params_shard_2.bin", "drop", 5_000_000)
    server.faults.add("params_shard_2.bin", "flip", 1_000)
    server.ranges.clear()
    assert page.evaluate(LOAD, VARIANT) == "loaded"
    asked_for = [(p.removeprefix(base).split("/", 1)[1], r) for p, r in server.ranges if p.startswith(base)]
    shards = [(f, r) for f, r in asked_for if f.startswith("params_shard")]
    assert [f for f, _ in shards if f == "params_shard_0.bin"] == []  # finished before the reload: kept
    assert [r for f, r in shards if f == "params_shard_1.bin"] == ["bytes=8388608-"]
    assert [r for f, r in shards if f == "params_shard_2.bin"] == [None, "bytes=4194304-", None]
    urls = cached_urls(page)
    assert not any("seam-part" in u for u in urls)  # parts are gone once a file is whole
    assert sum(u.endswith(".bin") for u in urls) == 3


def test_too_little_storage_means_the_server_answers(page, default_built, app_server):
    server = app_server(default_built)
    # Chromium enforces this quota on writes, though navigator.storage.estimate() does not report it: the
    # download runs into it, stops, and gives back the space it took.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": server.url.rstrip("/"), "quotaSize": 20_000_000})
    chat = ChatPage(page, server.url).open(**GREEDY)
    expect(chat.notice).to_contain_text("storage for the site is full", timeout=120_000)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    expect(chat.route).to_contain_text("cannot run")
    assert chat.ask(FRANCE)["where"] == "cloud"
    assert not [u for u in cached_urls(page) if f"/models/{VARIANT}/" in u]
    # The engine alone (its JS API) says the same, with its type.
    assert page.evaluate(LOAD, VARIANT).startswith("StorageQuotaError")
    assert not [u for u in cached_urls(page) if f"/models/{VARIANT}/" in u]
