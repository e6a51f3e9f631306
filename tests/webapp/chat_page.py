"""Page object for the chat page: what a person does (settings, send, stop, new chat) and sees."""
from __future__ import annotations

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
