"""The page collects its probe report in a real browser and asks the router before answering."""
import jsonschema
from playwright.sync_api import expect

from router.validation import schema

PROBE_SCHEMA = schema("probe-report.v1.json")

NO_WEBGPU = ["--enable-unsafe-webgpu"]


def test_page_reports_probes_and_shows_the_decision(page, tiny_server):
    page.goto(tiny_server.url)
    expect(page.locator("#route")).to_have_attribute("data-target", "cloud", timeout=60_000)
    report = page.evaluate("window.seam.status().report")
    jsonschema.validate(report, PROBE_SCHEMA)
    assert report["webgpu"]["available"] is True
    assert report["webgpu"]["limits"]["maxStorageBufferBindingSize"] > 0
    assert report["benchmark"]["bandwidth_gbps"] > 0
    assert report["storage"]["quota_bytes"] > 0 and report["cached_models"] == []
    decision = page.evaluate("window.seam.status().decision")
    assert decision["reasons"][0]["code"] == "not_downloaded" and decision["prefetch"] is True
    expect(page.locator("#route")).to_contain_text("is not in this browser yet")


def test_browser_without_webgpu_gets_the_cpu_build_while_the_server_answers(launch_page, tiny_server):
    page = launch_page(drop=NO_WEBGPU, add=["--disable-features=WebGPU", "--disable-gpu"])
    page.goto(tiny_server.url)
    expect(page.locator("#route")).to_have_attribute("data-target", "cloud", timeout=60_000)
    report = page.evaluate("window.seam.status().report")
    assert report["webgpu"] == {"available": False} and report["benchmark"] is None
    assert report["wasm"]["simd"] is True and report["hardware_concurrency"] >= 1
    decision = page.evaluate("window.seam.status().decision")
    assert (decision["reasons"][0]["code"], decision["backend"], decision["prefetch"]) == ("not_downloaded", "cpu", True)
    assert decision["variant"].endswith("-q4f32_1")  # the float32 preset: the one with a CPU build
