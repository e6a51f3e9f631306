"""The page collects its probe report in a real browser and asks the router before answering."""
import json

import jsonschema
from playwright.sync_api import expect

from router.api import PROBE_SCHEMA
from tests.harness import CHROMIUM, CHROMIUM_FLAGS


def test_page_reports_probes_and_shows_the_decision(page, live_app):
    page.goto(live_app)
    expect(page.locator("#route")).to_have_attribute("data-target", "cloud", timeout=60_000)
    report = page.evaluate("window.seamLastReport")
    jsonschema.validate(report, PROBE_SCHEMA)
    assert report["webgpu"]["available"] is True
    assert report["webgpu"]["limits"]["maxStorageBufferBindingSize"] > 0
    assert report["benchmark"]["bandwidth_gbps"] > 0
    assert report["storage"]["quota_bytes"] > 0 and report["cached_models"] == []
    decision = page.evaluate("window.seamLastDecision")
    assert decision["reasons"][0]["code"] == "not_downloaded" and decision["prefetch"] is True
    expect(page.locator("#route")).to_contain_text("is not in this browser yet")


def test_browser_without_webgpu_is_sent_to_the_cloud(browser_type, live_app):
    browser = browser_type.launch(executable_path=CHROMIUM,
                                  args=[f for f in CHROMIUM_FLAGS if f != "--enable-unsafe-webgpu"]
                                  + ["--disable-features=WebGPU", "--disable-gpu"])
    try:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live_app)
        expect(page.locator("#route")).to_have_attribute("data-target", "cloud", timeout=60_000)
        report = page.evaluate("window.seamLastReport")
        assert report["webgpu"] == {"available": False} and report["benchmark"] is None
        assert page.evaluate("window.seamLastDecision")["reasons"][0]["code"] == "browser_cannot_run"
        assert errors == []
    finally:
        browser.close()
