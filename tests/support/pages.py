"""Seam's pages in a browser: the chat page's page object (what a person does and sees), the browser engine
through the page's Seam client (window.seam), and requests held in mid-flight."""
from __future__ import annotations

import json

from playwright.sync_api import Locator, Page, expect

LOAD_TIMEOUT_MS = 600_000      # download + GPU pipeline creation on a software adapter
ANSWER_TIMEOUT_MS = 900_000    # SwiftShader decodes this model at well under a token per second


class ChatPage:
    def __init__(self, page: Page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.route = page.locator("#route")
        self.prompt = page.locator("#prompt")
        self.messages = page.locator("#messages .message")
        self.answers = page.locator("#messages .message.assistant")
        self.notice = page.locator("#notice")

    def open(self, **settings) -> "ChatPage":
        self.page.goto(self.base_url)
        expect(self.route).not_to_have_attribute("data-target", "pending", timeout=60_000)
        self.settings(**settings)
        return self

    def settings(self, preference: str | None = None, **fields) -> None:
        """Fill the settings panel: preference=auto|fastest|local_only|cloud_only, model=<a name>, temperature=..."""
        if fields or preference:
            self.page.locator("#settings summary").click()
        for name, value in fields.items():
            field = self.page.locator(f"#{name.replace('_', '-')}")
            field.select_option(value) if name == "model" else field.fill("" if value is None else str(value))
        if preference:
            self.page.locator("#preference").select_option(preference)
            expect(self.route).to_have_attribute("data-target", "browser" if preference == "local_only" else "cloud",
                                                 timeout=60_000)
        if fields or preference:
            self.page.locator("#settings summary").click()

    def wait_until_loaded(self) -> dict:
        """Until the page's Seam client holds a checked browser model: its engine entry (id, version, adapter...)."""
        self.page.wait_for_function("() => window.seam?.status().engine?.state === 'ready'", timeout=LOAD_TIMEOUT_MS)
        return self.page.evaluate("window.seam.status().engine")

    def decision(self) -> dict:
        """The latest decision the page's Seam client holds."""
        return self.page.evaluate("window.seam.status().decision")

    def send(self, text: str) -> Locator:
        """Type and send a message; returns the locator of the answer it starts."""
        count = self.answers.count()
        self.prompt.fill(text)
        self.prompt.press("Enter")
        answer = self.answers.nth(count)
        expect(answer).to_be_attached()
        return answer

    def wait_for_answer(self, answer: Locator) -> dict:
        expect(answer).not_to_have_attribute("data-state", "streaming", timeout=ANSWER_TIMEOUT_MS)
        return {"state": answer.get_attribute("data-state"), "where": answer.get_attribute("data-where"),
                "finish_reason": answer.get_attribute("data-finish-reason"),
                "error_kind": answer.get_attribute("data-error-kind"),
                "text": answer.locator(".content").inner_text(), "stats": answer.locator(".stats").inner_text()}

    def ask(self, text: str) -> dict:
        return self.wait_for_answer(self.send(text))

    def stop(self) -> None:
        self.page.locator("#stop").click()

    def new_chat(self) -> None:
        self.page.locator("#new-chat").click()


# The browser engine through the chat page's Seam client (window.seam, its public API): `prepare` loads
# and checks `variant` (on `kernels`, else the page URL's), then each request in order gives its content,
# finish reason, usage, tokens, stats, tool calls and where it ran, or its typed error. A request
# {"tool_result": text, ...} is the one before it, going on after its answer's calls, each answered with
# `text` (a tool loop). `progress`: the download's events; `steps`: the engine's states as they came.
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
  let asked = null, said = null;
  for (let request of requests) {
    if (request.tool_result !== undefined) {  // the last request, its answer's calls, and each call's result
      const { tool_result: result, ...rest } = request;
      const answered = (said.tool_calls ?? []).map((c) => ({ role: "tool", tool_call_id: c.id, content: result }));
      request = { ...asked, ...rest, messages: [...asked.messages, said, ...answered] };
    }
    try {
      const r = await seam.chat.completions.create(request);
      [asked, said] = [request, r.choices[0].message];
      results.push({ content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage,
                     token_ids: r.seam.token_ids, stats: r.seam.stats, target: r.seam.target,
                     tool_calls: r.choices[0].message.tool_calls });
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


def run_in_the_engine(page, base_url: str, variant: str, requests_: list[dict], expected_console_errors,
                      kernels: str | None = None) -> list[dict]:
    """The results of `requests_` in the browser engine, which must have loaded."""
    result = in_the_engine(page, base_url, variant, requests_, expected_console_errors, kernels)
    assert "load" not in result, result["load"]
    return result["results"]


class HeldRequests:
    """The server's answers for paths ending in `suffix` wait until `release()`: a download held in mid-flight,
    so a test can look at the page while it is under way. Held at the server, not in the browser: the
    engine's requests come from a SharedWorker, which Playwright's routing does not see."""

    def __init__(self, server, suffix: str):
        self.released = server.faults.hold(suffix)

    def release(self) -> None:
        self.released.set()
