"""What the Seam client (webapp/client/) needs from the server: the client itself at a stable URL, its
config, and the browser libraries its engine loads.

- `GET /client/<file>`: the client package's files (`/client/index.js` is its entry), never cached
  without asking, so a page never mixes two builds of it.
- `GET /api/client`: the client config: the API version the server speaks, the catalog as the browser
  loads it, the endpoints, and the engine's settings (library URLs, grammar rules, request limits).
- `GET /vendor/<version>/<name>`: tvmjs, web-tokenizers, jinja and web-xgrammar from the npm packages
  webapp/package-lock.json pins. The version is the package's, in the URL, so the files are cached as
  immutable: a browser that loaded them once can start its engine while the server is unreachable.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from flask import Blueprint, current_app, jsonify, send_from_directory, url_for

from router import grammar, tools
from router.errors import ApiError

bp = Blueprint("client", __name__)
WEBAPP = Path(__file__).resolve().parent.parent / "webapp"
CLIENT = WEBAPP / "client"
NODE_MODULES = WEBAPP / "node_modules"
API_VERSION = 1  # of /api/client and everything it lists; the client refuses a server that speaks another
YEAR = 365 * 24 * 3600
# The browser libraries the engine may load: (npm package, file); nothing else is served.
VENDOR = {"tvmjs.js": ("@mlc-ai/web-runtime", "lib/index.js"), "tokenizers.js": ("@mlc-ai/web-tokenizers", "lib/index.js"),
          "jinja.js": ("@huggingface/jinja", "dist/index.js"), "xgrammar.js": ("@mlc-ai/web-xgrammar", "lib/index.js")}
CLIENT_TYPES = {".js": "text/javascript", ".ts": "text/plain", ".json": "application/json", ".md": "text/markdown"}


@cache
def vendor_version(name: str) -> str:
    package, _ = VENDOR[name]
    return json.loads((NODE_MODULES / package / "package.json").read_text())["version"]


def base_url(entry: dict) -> str:
    """The URL folder of one model version: its config file's URL without the file name."""
    config_url = url_for("artifacts.model_file", model_id=entry["id"], version=entry["version"],
                         filename=entry["files"]["config"])
    return config_url.rsplit("/", 1)[0] + "/"


def browser_models() -> list[dict]:
    """The catalog as the browser needs it: what to check and load, and where the files are."""
    shown = ("id", "model", "quantization", "version", "files", "download_bytes", "context_window_size",
             "prefill_chunk_size", "requirements", "kernels", "self_check", "tool_format")
    return [{**{k: m[k] for k in shown}, "compatible_versions": m.get("compatible_versions", []),
             **({"cpu": m["cpu"]} if "cpu" in m else {}), "base_url": base_url(m)}
            for m in current_app.extensions["seam"]["catalog"].models]


def client_config() -> dict:
    from router.shell import build_id  # the shell reads this module's folders
    config = current_app.config
    return {"api_version": API_VERSION, "build": build_id(), "client_url": url_for("client.client_file", filename="index.js"),
            "models": browser_models(),
            "endpoints": {"route": url_for("api.route"), "chat": url_for("api.chat_completions"),
                          "models": url_for("api.models"), "catalog": url_for("api.catalog"),
                          "self_check": url_for("api.self_check"), "outcome": url_for("api.outcome")},
            "engine": {"partBytes": config["DOWNLOAD_PART_BYTES"],
                       "request": {"default_max_tokens": config["DEFAULT_MAX_TOKENS"],
                                   "max_tokens_limit": config["MAX_TOKENS_LIMIT"]},
                       "vendor": {name.removesuffix(".js"): url_for("client.vendor", version=vendor_version(name), name=name)
                                  for name in VENDOR},
                       "grammar": {"json_style": grammar.JSON_STYLE,
                                   "unsupported_keywords": list(grammar.UNSUPPORTED_KEYWORDS),
                                   "limits": grammar.SCHEMA_LIMITS,
                                   "compile_timeout_s": config["SCHEMA_TIMEOUT_S"]},
                       "tools": tools.RULES,
                       "cpuMaxThreads": current_app.extensions["seam"]["policy"]["cpu"]["max_threads"]},
            "testHooks": bool(config["TEST_HOOKS"])}


@bp.get("/api/client")
def config():
    """The client config, never cached: a rebuild or a restart with other settings shows at once."""
    response = jsonify(client_config())
    response.cache_control.no_store = True
    return response


@bp.get("/client/<path:filename>")
def client_file(filename: str):
    """The client package's files; send_from_directory refuses paths that leave its folder."""
    mimetype = CLIENT_TYPES.get(Path(filename).suffix)
    if mimetype is None:
        raise ApiError(404, f"{filename} is not a file of the Seam client")
    response = send_from_directory(CLIENT, filename, mimetype=mimetype, max_age=0, conditional=True)
    response.cache_control.no_cache = True
    return response


@bp.get("/vendor/<version>/<name>")
def vendor(version: str, name: str):
    """A pinned browser library at its package's version, cached for a year."""
    if name not in VENDOR:
        raise ApiError(404, f"{name} is not a served library")
    if version != vendor_version(name):
        raise ApiError(404, f"this server has {name} at version {vendor_version(name)}, not {version}")
    package, file = VENDOR[name]
    response = send_from_directory(NODE_MODULES / package, file, mimetype="text/javascript", max_age=YEAR, conditional=True)
    response.cache_control.immutable = True
    response.cache_control.public = True
    return response
