"""What several browser tests need from the server side: its answer, and catalogs cut from a build."""
import json
import shutil

import requests

from tests.structured import response_format

REAL = "SmolLM2-135M-Instruct"  # the default model (tests marked real_model)
TINY = "tiny-llama"             # the tiny random Llama with the real tokenizer (tests/tiny_llama.py)


def server_answer(base_url: str, messages: list[dict], max_tokens: int, model: str = REAL) -> dict:
    return server_reply(base_url, {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens})


def server_reply(base_url: str, request: dict) -> dict:
    """The server's answer to a whole chat request (OpenAI's shape), which must succeed."""
    response = requests.post(base_url + "v1/chat/completions", json=request, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def greedy_request(case: dict, model: str) -> dict:
    return {"model": model, "messages": case["messages"], "response_format": response_format(case["schema"]),
            "temperature": 0, "max_tokens": case["max_tokens"]}


# The browser engine through the chat page's Seam client (window.seam, its public API): `prepare` loads
# and checks `variant` (on `kernels`, else the page URL's), then each request in order gives its content,
# finish reason, usage, tokens, stats and where it ran, or its typed error. `progress`: the download's
# events; `steps`: the engine's states as they came.
PREPARE_AND_RUN = """async ({ variant, kernels, requests }) => {
  while (!window.seam) await new Promise((r) => setTimeout(r, 50));
  const seam = window.seam, progress = [], steps = [];
  seam.on("progress", (p) => progress.push(p));
  seam.on("engine", (e) => steps.push({ key: e.key, state: e.state, phase: e.phase ?? null }));
  let engine;
  try {
    engine = await seam.prepare({ variant, ...(kernels ? { kernels } : {}) });
  } catch (error) {
    return { load: { kind: error.kind, message: error.message }, progress, steps, results: [] };
  }
  const results = [];
  for (const request of requests) {
    try {
      const r = await seam.chat.completions.create(request);
      results.push({ content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage,
                     token_ids: r.seam.token_ids, stats: r.seam.stats, target: r.seam.target });
    } catch (error) {
      results.push({ kind: error.kind, message: error.message });
    }
  }
  return { engine, progress, steps, results };
}"""


# A person's use of the page in a browser Playwright cannot drive (Firefox over WebDriver BiDi): "This
# device only", greedy, one question; what the page then shows, and the router's decision.
ANSWER_IN_THE_PAGE = """async ({ prompt, maxTokens }) => {
  const until = async (check) => { while (!check()) await new Promise((r) => setTimeout(r, 200)); };
  await until(() => window.seam && document.getElementById("route").dataset.target !== "pending");
  document.querySelector("#settings").open = true;
  document.getElementById("temperature").value = "0";
  document.getElementById("max-tokens").value = String(maxTokens);
  const preference = document.getElementById("preference");
  preference.value = "local_only";
  preference.dispatchEvent(new Event("change"));
  await until(() => window.seam.status().engine?.state === "ready");
  document.getElementById("prompt").value = prompt;
  document.getElementById("composer").requestSubmit();
  await until(() => document.querySelector(".message.assistant:not([data-state=streaming])"));
  const answer = document.querySelector(".message.assistant");
  const { engine, decision } = window.seam.status();
  return { loaded: engine.id, adapter: engine.adapter, state: answer.dataset.state,
           text: answer.querySelector(".content").textContent, stats: answer.querySelector(".stats").textContent,
           decision };
}"""


def in_the_engine(page, base_url: str, variant: str, requests_: list[dict], expected_console_errors,
                  kernels: str | None = None) -> dict:
    """PREPARE_AND_RUN in a fresh page of `base_url`. The page would route, prefetch and self-check by
    itself; here its routing is cut, so the test alone says what loads (answers then go to the model the
    browser holds, as when the server cannot be asked)."""
    expected_console_errors.append("net::ERR_FAILED")
    page.route("**/api/route", lambda route: route.abort())
    page.goto(base_url)
    result = page.evaluate(PREPARE_AND_RUN, {"variant": variant, "kernels": kernels, "requests": requests_})
    print(json.dumps(result, indent=1))  # shown when the test fails
    return result


def run_in_the_engine(page, base_url: str, variant: str, requests_: list[dict], expected_console_errors) -> list[dict]:
    """The results of `requests_` in the browser engine, which must have loaded."""
    result = in_the_engine(page, base_url, variant, requests_, expected_console_errors)
    assert "load" not in result, result["load"]
    return result["results"]


def models_subset(built, folder, variant: str, corrupt: str | None = None):
    """A models/ folder holding one variant of a build, optionally with one file's bytes flipped."""
    catalog = json.loads((built / "manifest.json").read_text())
    catalog["models"] = [m for m in catalog["models"] if m["id"] == variant]
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(catalog))
    shutil.copytree(built / variant, folder / variant)
    if corrupt:
        shard = folder / variant / corrupt
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the sha256 can tell
        shard.write_bytes(bytes(data))
    return folder


class HeldRequests:
    """The page's requests for URLs matching `pattern` wait in the browser until `release()`: a download
    held in mid-flight, so a test can look at the page while it is under way."""

    def __init__(self, page, pattern: str):
        self.page, self.pattern, self.routes, self.released = page, pattern, [], False
        page.route(pattern, self.hold)

    def hold(self, route) -> None:
        route.continue_() if self.released else self.routes.append(route)

    def release(self) -> None:
        # The held requests go on before the handler is removed: removing it first lets Playwright pass
        # them on itself, racing this (then "Route is already handled").
        self.released = True
        for route in self.routes:
            route.continue_()
        self.page.unroute(self.pattern)
