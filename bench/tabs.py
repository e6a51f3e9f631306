"""The memory a second tab adds: the browser's whole memory (the proportional set size of every Chromium
process, so shared pages count once) with one tab that answered from the real model, then with a second tab
that answered too; once with each tab's own engine (`?engine=own`, a second copy of the model) and once with
the engine the tabs share (a SharedWorker). A fresh browser for each, against the real server over HTTP."""
from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from bench.engines import VARIANT, launch

ANSWER = """async () => {
  const until = async (check) => { while (!check()) await new Promise((r) => setTimeout(r, 100)); };
  await until(() => window.seam);
  await window.seam.configure({ preference: "local_only" });
  await until(() => window.seam.status().engine?.state === "ready");
  const r = await window.seam.chat.completions.create({ messages: [{ role: "user", content: "Hi" }], max_tokens: 8,
                                                         temperature: 0 });
  return { where: r.seam.target, host: window.seam.status().engine_host.kind };
}"""


def chromium_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and "chromium" in (proc / "exe").resolve().name:
                pids.add(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def pss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def one_mode(url: str, engine: str, kernels: str) -> dict:
    before = chromium_pids()
    browser = launch()
    ours = lambda: chromium_pids() - before  # noqa: E731 -- this launch's processes, as they come and go
    try:
        context = browser.new_context()
        page_url = f"{url}?kernels={kernels}&engine={engine}"
        memory, hosts = [], []
        for _ in range(2):
            page = context.new_page()
            page.goto(page_url)
            answered = page.evaluate(ANSWER)
            assert answered["where"] == "browser", answered
            hosts.append(answered["host"])
            page.wait_for_timeout(2000)  # let freed memory settle
            memory.append(pss_bytes(ours()))
        return {"one_tab_mb": memory[0] / 1e6, "two_tabs_mb": memory[1] / 1e6,
                "second_tab_adds_mb": (memory[1] - memory[0]) / 1e6, "hosts": hosts}
    finally:
        browser.close()


def measure(models: Path, kernels: str = "cpu") -> dict:
    """The memory of one and two tabs, each tab with its own engine and with the shared one, on `kernels`."""
    from werkzeug.serving import make_server

    from router import create_app

    with tempfile.TemporaryDirectory() as fleet:
        app = create_app({"MODELS_DIR": str(models), "FLEET_DB": f"{fleet}/fleet.sqlite3", "TEST_HOOKS": True})
        for name in ("werkzeug", "seam.requests"):
            logging.getLogger(name).setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/"
        try:
            return {"variant": VARIANT, "kernels": kernels,
                    **{engine: one_mode(url, engine, kernels) for engine in ("own", "shared")}}
        finally:
            server.shutdown()
