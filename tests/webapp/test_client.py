"""The Seam client as a library, used by pages of other origins.

A third-party site is a second static server on another port (another origin) in real Chromium. It imports
the client from the Seam server (the README's example, as written), or from the npm package that `npm pack`
makes and npm installs into the site. It connects, chats, and is told why when it cannot: an origin the
server does not allow, a server that is down, options the client does not take. The server is the Flask
app over the tiny random Llama (tests/support/tiny_llama.py); the page's requests are real HTTP across origins.
"""
import json
import re
import shutil
import subprocess

import pytest
import requests

from tests.support.api import server_reply
from tests.support.models import TINY
from tests.support.repo import REPO

CLIENT = REPO / "webapp" / "client"
TSC = REPO / "webapp" / "node_modules" / ".bin" / "tsc"
GREEDY = {"temperature": 0, "max_tokens": 8}
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CROSS_ORIGIN_ERRORS = ["blocked by CORS policy", "net::ERR_FAILED", "net::ERR_CONNECTION_REFUSED"]
# What the page's requests see once the server is gone: refused, a kept-alive socket closed, or a report in
# flight (the answer's /api/outcome) reset as the server closes.
SERVER_GONE_ERRORS = ["net::ERR_CONNECTION_REFUSED", "net::ERR_SOCKET_NOT_CONNECTED", "net::ERR_CONNECTION_RESET"]
BLANK_PAGE = '<!doctype html><link rel="icon" href="data:,"><title>a third-party site</title><body>'


def readme_example() -> str:
    """The README's "Use Seam in your own page" example, as written."""
    readme = (REPO / "README.md").read_text()
    return re.search(r"<!-- example: use-seam .*?-->\n```html\n(.*?)```", readme, re.S).group(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A third-party site's folder: the client installed from the tarball `npm pack` makes, and a blank page."""
    folder = tmp_path_factory.mktemp("site")
    npm = shutil.which("npm")
    assert npm, "npm is missing: run `make setup`"
    packed = subprocess.run([npm, "pack", "--pack-destination", str(folder)], cwd=CLIENT, capture_output=True,
                            text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    (folder / "package.json").write_text(json.dumps({"name": "third-party-site", "private": True, "type": "module"}))
    tarball = packed.stdout.strip().splitlines()[-1]
    installed = subprocess.run([npm, "install", "--offline", "--no-audit", "--no-fund", f"./{tarball}"], cwd=folder,
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    (folder / "index.html").write_text(BLANK_PAGE)
    return folder


def site_origin(url: str) -> str:
    return url.rstrip("/")


def test_the_packed_client_installs_imports_under_node_and_the_readme_example_type_checks(site, tmp_path):
    imported = subprocess.run(["node", "--input-type=module", "-e",
                               "const m = await import('seam-client'); console.log(JSON.stringify(Object.keys(m).sort()), "
                               "typeof m.Seam.connect, m.ErrorKind.OriginNotAllowed)"],
                              cwd=site, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == ['["ErrorKind","Seam","SeamError"]', "function", "OriginNotAllowedError"]
    # The README's example, against the declarations of the installed package.
    script = re.search(r"<script type=\"module\">\n(.*)</script>", readme_example(), re.S).group(1)
    example = site / "example.ts"
    example.write_text(script.replace("https://seam.example.com/client/index.js", "seam-client"))
    checked = subprocess.run([str(TSC), "--noEmit", "--strict", "--target", "es2022", "--module", "es2022",
                              "--moduleResolution", "bundler", "--lib", "es2022,dom,dom.iterable,dom.asynciterable",
                              str(example)], cwd=site, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_readme_example_chats_from_another_origin(page, app_server, tiny_models, serve_folder, tmp_path):
    folder = tmp_path / "example"
    folder.mkdir()
    site_url = serve_folder(folder)
    server = app_server(tiny_models, ALLOWED_ORIGINS=site_origin(site_url))
    (folder / "index.html").write_text(BLANK_PAGE + readme_example()
                                       .replace("https://seam.example.com/", server.url))
    page.goto(site_url)
    page.wait_for_function("() => document.querySelector('output')?.dataset.where", timeout=120_000)
    assert page.locator("output").get_attribute("data-where") == "cloud"  # a first visit: the model is not here yet
    assert page.locator("output").inner_text()


# The client from the Seam server, in a page of the site: three connections, each a thing a user may meet.
THREE_WAYS = """async ({ server, variant }) => {
  const { Seam } = await import(`${server}client/index.js`);
  const answer = async (seam, request) => {
    const r = await seam.chat.completions.create({ messages: request.messages, temperature: 0, max_tokens: request.max_tokens });
    return { content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage, seam: r.seam };
  };
  const request = ({ max_tokens }) => ({ messages: [{ role: "user", content: "What is the capital of France?" }], max_tokens });
  // In the browser: WebGPU (whose device the test hook can lose), the model downloaded and checked first.
  const seam = await Seam.connect({ server, kernels: "software" });
  const events = [];
  for (const type of ["decision", "engine", "selfcheck", "handover"]) seam.on(type, (e) => events.push(type));
  const engine = await seam.prepare({ variant });
  while (seam.status().decision?.target !== "browser") await new Promise((r) => setTimeout(r, 50));
  const browser = await answer(seam, request({ max_tokens: 8 }));
  // The GPU is lost three tokens into the next answer: the server goes on with it.
  seam.test.loseDeviceAfter(3);
  const handed = await answer(seam, request({ max_tokens: 12 }));
  const after = seam.status();
  // Where the browser can't: a variant without a CPU build, on the CPU.
  const other = await Seam.connect({ server, model: `${variant.split("-q4")[0]}-q4f16_1`, kernels: "cpu" });
  const cloud = await answer(other, request({ max_tokens: 8 }));
  return { engine, browser, handed, cloud, events: [...new Set(events)], after: { engine: after.engine,
           failed: after.engines.filter((e) => e.state === "failed").map((e) => e.reason) } };
}"""


def test_a_page_of_another_origin_chats_through_the_client_the_seam_server_serves(page, app_server, tiny_models,
                                                                                 serve_folder, site, self_check_passed,
                                                                                 expected_console_errors):
    site_url = serve_folder(site)
    server = app_server(tiny_models, ALLOWED_ORIGINS=site_origin(site_url))
    expected_console_errors.append("Device lost, calling Instance.dispose()")
    page.goto(site_url)
    shown = page.evaluate(THREE_WAYS, {"server": server.url, "variant": f"{TINY}-q4f32_1"})
    print(json.dumps(shown, indent=1))
    whole = server_reply(server.url, {"model": TINY, "messages": FRANCE, **GREEDY})
    assert shown["engine"]["state"] == "ready" and shown["engine"]["backend"] == "webgpu"
    assert (shown["browser"]["seam"]["target"], shown["browser"]["seam"]["backend"]) == ("browser", "webgpu")
    assert shown["browser"]["content"] == whole["choices"][0]["message"]["content"]
    assert shown["browser"]["seam"]["reasons"][0]["code"] == "cached"
    assert shown["browser"]["seam"]["token_ids"] and shown["browser"]["seam"]["stats"]["decode_tokens_per_s"] > 0

    handed = shown["handed"]["seam"]
    longer = server_reply(server.url, {"model": TINY, "messages": FRANCE, **GREEDY, "max_tokens": 12})
    assert handed["target"] == "cloud" and handed["handover"]["from"] == "browser"
    assert handed["handover"]["at_token"] == 3 and handed["handover"]["kind"] == "DeviceLostError"
    assert shown["handed"]["content"] == longer["choices"][0]["message"]["content"], \
        "text was lost or repeated where the server took over the answer"
    assert len(handed["token_ids"]) == longer["usage"]["completion_tokens"], "the handover lost or repeated tokens"
    assert shown["handed"]["usage"] == longer["usage"]
    assert shown["after"]["engine"] is None and "lost" in shown["after"]["failed"][0]

    cloud = shown["cloud"]["seam"]
    assert cloud["target"] == "cloud" and cloud["reasons"][0]["code"] == "browser_cannot_run"
    assert shown["cloud"]["content"] == whole["choices"][0]["message"]["content"]
    assert set(shown["events"]) == {"decision", "engine", "selfcheck", "handover"}
    # What made it work: the server named the site's origin, and only it, on the API and on the files.
    site_origin_header = {"Origin": site_origin(site_url)}
    allowed = requests.get(server.url + "api/client", headers=site_origin_header, timeout=10)
    assert allowed.headers["Access-Control-Allow-Origin"] == site_origin(site_url)
    other = requests.get(server.url + "api/client", headers={"Origin": "http://elsewhere.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = requests.options(server.url + "v1/chat/completions", timeout=10, headers={
        **site_origin_header, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert preflight.ok and "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()
    entry = json.loads((tiny_models / "manifest.json").read_text())["models"][0]
    shard = f"models/{entry['id']}/{entry['version']}/params_shard_0.bin"
    ranged = requests.options(server.url + shard, timeout=10, headers={
        **site_origin_header, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"})
    assert ranged.ok and "range" in ranged.headers["Access-Control-Allow-Headers"].lower()
    part = requests.get(server.url + shard, headers={**site_origin_header, "Range": "bytes=10-"}, timeout=10)
    assert part.status_code == 206 and "Content-Range" in part.headers["Access-Control-Expose-Headers"]


REFUSALS = """async ({ server, down }) => {
  const { Seam } = await import("/node_modules/seam-client/index.js");
  const refusal = (options) => Seam.connect(options).then(() => null, (e) => ({ kind: e.kind, message: e.message }));
  return {
    origin: await refusal({ server }),
    down: await refusal({ server: down }),
    name: await refusal({ server, preferences: "auto" }),
    preference: await refusal({ server, preference: "sometimes" }),
    url: await refusal({ server: "ftp://seam.example.com/" }),
  };
}"""


def test_a_page_of_an_origin_not_allowed_is_told_why_and_options_are_checked(page, app_server, tiny_models, site,
                                                                            serve_folder, expected_console_errors):
    site_url = serve_folder(site)
    server = app_server(tiny_models)  # SEAM_ALLOWED_ORIGINS unset: same origin only
    expected_console_errors.extend(CROSS_ORIGIN_ERRORS)
    from tests.support.servers import free_port
    down = f"http://127.0.0.1:{free_port()}/"
    page.goto(site_url)
    refused = page.evaluate(REFUSALS, {"server": server.url, "down": down})
    print(json.dumps(refused, indent=1))
    assert refused["origin"]["kind"] == "OriginNotAllowedError"
    assert site_origin(site_url) in refused["origin"]["message"] and "SEAM_ALLOWED_ORIGINS" in refused["origin"]["message"]
    assert refused["down"]["kind"] == "ServerUnreachableError" and down in refused["down"]["message"]
    assert refused["name"]["kind"] == "InvalidOptionError" and '"preferences"' in refused["name"]["message"]
    assert refused["preference"]["kind"] == "InvalidOptionError" and "option preference must be one of" in refused["preference"]["message"]
    assert refused["url"]["kind"] == "InvalidOptionError" and "option server" in refused["url"]["message"]
    response = requests.get(server.url + "api/client", headers={"Origin": site_origin(site_url)}, timeout=10)
    assert response.ok and not any(h.lower().startswith("access-control-") for h in response.headers)


API_VERSION = """async ({ server }) => {
  const { Seam } = await import("/node_modules/seam-client/index.js");
  return Seam.connect({ server }).then(() => null, (e) => ({ kind: e.kind, message: e.message }));
}"""


def test_a_server_of_another_api_version_is_refused_with_both_versions_named(page, app_server, tiny_models, site,
                                                                             serve_folder):
    site_url = serve_folder(site)
    server = app_server(tiny_models, ALLOWED_ORIGINS=site_origin(site_url))
    config = requests.get(server.url + "api/client", timeout=10).json()
    page.route(f"{server.url}api/client", lambda route: route.fulfill(
        json={**config, "api_version": 7}, headers={"Access-Control-Allow-Origin": site_origin(site_url)}))
    page.goto(site_url)
    refused = page.evaluate(API_VERSION, {"server": server.url})
    assert refused["kind"] == "ApiVersionError"
    assert "speaks API version 7" in refused["message"] and "this client speaks 1" in refused["message"]


OFFLINE_TURN = """async ({ server, variant, connect }) => {
  const { Seam } = await import("/node_modules/seam-client/index.js");
  if (connect) window.seamClient = await Seam.connect({ server, preference: "local_only" });
  const seam = window.seamClient;
  if (variant) await seam.prepare({ variant });
  const r = await seam.chat.completions.create({ messages: [{ role: "user", content: "What is the capital of France?" }],
                                                 temperature: 0, max_tokens: 8 });
  const { server: reach, engine } = seam.status();
  return { content: r.choices[0].message.content, target: r.seam.target, route_error: r.seam.route_error ?? null,
           reasons: r.seam.reasons.map((x) => x.code), reachable: reach.reachable, engine: engine && engine.key };
}"""


def test_the_client_answers_in_the_browser_while_its_server_is_down(page, app_server, tiny_models, site, serve_folder,
                                                                   expected_console_errors):
    """A page that holds a checked model keeps answering when the Seam server goes away, and a new visit
    connects from what it remembers and answers from the browser's cache (the client and its page come
    from the site; the engine's libraries from the browser's HTTP cache, where the server put them as immutable)."""
    site_url = serve_folder(site)
    server = app_server(tiny_models, ALLOWED_ORIGINS=site_origin(site_url))
    expected_console_errors.extend(CROSS_ORIGIN_ERRORS + SERVER_GONE_ERRORS)
    variant = f"{TINY}-q4f32_1"
    page.goto(site_url)
    online = page.evaluate(OFFLINE_TURN, {"server": server.url, "variant": variant, "connect": True})
    assert (online["target"], online["reachable"]) == ("browser", True)
    server.close()  # the Seam server is gone: nothing listens on its port any more
    still = page.evaluate(OFFLINE_TURN, {"server": server.url, "variant": None, "connect": False})
    assert (still["target"], still["reachable"], still["content"]) == ("browser", False, online["content"])
    assert still["route_error"], "the answer does not say the router could not be asked"
    page.reload()
    revisit = page.evaluate(OFFLINE_TURN, {"server": server.url, "variant": None, "connect": True})
    print(json.dumps([online, still, revisit], indent=1))
    assert (revisit["target"], revisit["reachable"], revisit["content"]) == ("browser", False, online["content"])
    assert revisit["reasons"] == ["server_unreachable"]


CLOUD_TWICE = """async ({ server }) => {
  const { Seam } = await import(`${server}client/index.js`);
  const seam = await Seam.connect({ server, preference: "cloud_only" });
  const seen = [];
  seam.on("decision", ({ decision }) => seen.push(decision.predictions.cloud));
  const ask = () => seam.chat.completions.create({ messages: [{ role: "user", content: "Hi" }], temperature: 0, max_tokens: 8 });
  const first = await ask();
  const second = await ask();
  return { seen, first: first.seam, second: second.seam, kept: JSON.parse(localStorage.getItem("seam.cloud-speeds")) };
}"""


def test_the_page_measures_the_cloud_as_it_sees_it_and_the_router_uses_that(page, app_server, tiny_models, site,
                                                                              serve_folder):
    """The cloud's TTFT and decode speed as the page saw its own cloud answer (network included) are kept
    and sent in the next probe report; the router's cloud prediction is then that measurement."""
    site_url = serve_folder(site)
    server = app_server(tiny_models, ALLOWED_ORIGINS=site_origin(site_url))
    page.goto(site_url)
    shown = page.evaluate(CLOUD_TWICE, {"server": server.url})
    first, second = shown["first"], shown["second"]
    assert (first["target"], second["target"]) == ("cloud", "cloud")
    stats = first["stats"]
    assert stats["ttft_s"] > 0 and stats["decode_tokens_per_s"] > 0
    (samples,) = shown["kept"].values()  # one server and model; a sample per cloud answer, the last few
    assert samples[0] == [stats["ttft_s"], stats["decode_tokens_per_s"]] and len(samples) == 2
    assert shown["seen"][0]["source"] != "measured_by_browser"  # before any cloud answer of this page's
    last = shown["seen"][-1]
    assert last["source"] == "measured_by_browser"
    assert last["tokens_per_s"] == pytest.approx(stats["decode_tokens_per_s"], abs=0.01)
    assert last["ttft_s"] == pytest.approx(stats["ttft_s"] + last["queue_wait_s"], abs=0.002)


TOOLS_THROUGH_THE_CLIENT = """async ({ tools }) => {
  while (!window.seam) await new Promise((r) => setTimeout(r, 50));
  const messages = [{ role: "user", content: "What is the weather in Paris?" }];
  const whole = await window.seam.chat.completions.create({ messages, tools, tool_choice: "required", temperature: 0,
                                                            parallel_tool_calls: false, max_tokens: 80 });
  const stream = await window.seam.chat.completions.create({ messages, tools, tool_choice: "required", temperature: 0,
                                                             parallel_tool_calls: false, max_tokens: 80, stream: true });
  const deltas = [];
  for await (const chunk of stream) for (const piece of chunk.choices[0]?.delta?.tool_calls ?? []) deltas.push(piece);
  return { message: whole.choices[0].message, finish: whole.choices[0].finish_reason, target: whole.seam.target,
           deltas };
}"""


def test_the_client_gives_tool_calls_as_openai_does(page, tiny_server):
    """On a first visit the server answers (the model is not in this browser yet); the client gives its calls
    as OpenAI does, whole or in stream deltas, and tells the router each answer is constrained (its grammar's
    compile counts in the browser's prediction). (The browser engine's calls: test_tools_in_browser.py.)"""
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}, "required": ["city"]}}}
    routed = []  # the probe reports the router was sent: an answer that may call tools compiles a grammar
    page.on("request", lambda r: routed.append(r.post_data_json) if r.url.endswith("/api/route") else None)
    page.goto(tiny_server.url)
    shown = page.evaluate(TOOLS_THROUGH_THE_CLIENT, {"tools": [weather]})
    assert (shown["target"], shown["finish"]) == ("cloud", "tool_calls"), shown
    answers_routed = [r for r in routed if r.get("max_tokens") == 80]  # (the page also routes without an answer)
    assert answers_routed and all(r.get("structured") for r in answers_routed), routed
    [call] = shown["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and set(json.loads(call["function"]["arguments"])) == {"city"}
    assert shown["deltas"][0]["id"].startswith("call_") and shown["deltas"][0]["function"]["name"] == "get_weather"
    assert "".join(d["function"]["arguments"] for d in shown["deltas"]) == call["function"]["arguments"]
