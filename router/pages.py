"""The chat page. Everything the page's scripts need (catalog, URLs) goes in as one JSON object."""
from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, current_app, render_template, send_from_directory, url_for

from router import grammar
from router.errors import ApiError
from router.sampling import SEED_MAX

bp = Blueprint("pages", __name__)
NODE_MODULES = Path(__file__).resolve().parent.parent / "webapp" / "node_modules"
# The browser libraries the page may load, pinned by webapp/package-lock.json; nothing else is served.
VENDOR = {"tvmjs.js": "@mlc-ai/web-runtime/lib/index.js", "tokenizers.js": "@mlc-ai/web-tokenizers/lib/index.js",
          "jinja.js": "@huggingface/jinja/dist/index.js", "xgrammar.js": "@mlc-ai/web-xgrammar/lib/index.js"}


def base_url(entry: dict) -> str:
    """The URL folder of one model version: its config file's URL without the file name."""
    config_url = url_for("artifacts.model_file", model_id=entry["id"], version=entry["version"],
                         filename=entry["files"]["config"])
    return config_url.rsplit("/", 1)[0] + "/"


def page_models() -> list[dict]:
    """The catalog as the page needs it: what to check and load, and where the files are."""
    shown = ("id", "model", "quantization", "version", "files", "download_bytes", "context_window_size",
             "prefill_chunk_size", "requirements", "kernels", "self_check")
    return [{**{k: m[k] for k in shown}, "compatible_versions": m.get("compatible_versions", []),
             **({"cpu": m["cpu"]} if "cpu" in m else {}), "base_url": base_url(m)}
            for m in current_app.extensions["seam"]["catalog"].models]


def page_config() -> dict:
    return {"models": page_models(),
            "endpoints": {"route": url_for("api.route"), "chat": url_for("api.chat_completions"),
                          "models": url_for("api.models"), "catalog": url_for("api.catalog"),
                          "self_check": url_for("api.self_check"), "outcome": url_for("api.outcome")},
            "engine": {"workerUrl": url_for("static", filename="js/engine/worker.js"),
                       "partBytes": current_app.config["DOWNLOAD_PART_BYTES"],
                       "request": {"default_max_tokens": current_app.config["DEFAULT_MAX_TOKENS"],
                                   "max_tokens_limit": current_app.config["MAX_TOKENS_LIMIT"]},
                       "vendor": {name.removesuffix(".js"): url_for("pages.vendor", name=name) for name in VENDOR},
                       "grammar": {"json_style": grammar.JSON_STYLE,
                                   "unsupported_keywords": list(grammar.UNSUPPORTED_KEYWORDS),
                                   "limits": grammar.SCHEMA_LIMITS,
                                   "compile_timeout_s": current_app.config["SCHEMA_TIMEOUT_S"]}},
            "testHooks": bool(current_app.config["TEST_HOOKS"])}


@bp.get("/")
def index():
    """The chat page."""
    limits = current_app.config
    return render_template("index.html", page_config=page_config(), max_tokens_limit=limits["MAX_TOKENS_LIMIT"],
                           model_names=current_app.extensions["seam"]["catalog"].model_names(),
                           default_max_tokens=limits["DEFAULT_MAX_TOKENS"], seed_max=SEED_MAX,
                           example_schema=json.dumps(grammar.EXAMPLE_SCHEMA, indent=2))


@bp.get("/vendor/<name>")
def vendor(name: str):
    """tvmjs, web-tokenizers, jinja and web-xgrammar from the pinned npm packages."""
    if name not in VENDOR:
        raise ApiError(404, f"{name} is not a served library")
    return send_from_directory(NODE_MODULES, VENDOR[name], mimetype="text/javascript")
