"""What several browser tests need from the server side: its answer, and catalogs cut from a build."""
import json
import shutil

import requests

REAL = "SmolLM2-135M-Instruct"  # the default model (tests marked real_model)
TINY = "tiny-llama"             # the tiny random Llama with the real tokenizer (tests/tiny_llama.py)


def server_answer(base_url: str, messages: list[dict], max_tokens: int, model: str = REAL) -> dict:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    return requests.post(base_url + "v1/chat/completions", json=body, timeout=600).json()


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
