"""Server settings: defaults, overridden by SEAM_* environment variables (or a test's mapping).

Secrets are never stored here: the upstream API key is read from the environment at the moment a
request is forwarded (see cloud.py), so it cannot leak through anything that renders the config.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def defaults() -> dict:
    return {
        "MODELS_DIR": str(REPO / "models"),
        "POLICY_FILE": str(Path(__file__).with_name("policy.toml")),
        "UPSTREAM_BASE_URL": None,          # an OpenAI-compatible base URL, e.g. http://host:8000/v1
        "UPSTREAM_MODEL": None,             # the model name to ask the upstream for (default: the request's)
        "UPSTREAM_TIMEOUT_S": 60.0,
        "EMBEDDED_ENGINE": True,            # serve the CPU library from models/ when no upstream is set
        "MAX_CONTENT_LENGTH": 1_000_000,    # request body limit, bytes
        "MAX_TOKENS_LIMIT": 2048,           # largest max_tokens a request may ask for
        "DEFAULT_MAX_TOKENS": 256,
        "MAX_QUEUE": 8,                     # chats in flight (answering or waiting) before 503s; see capacity.py
        "MAX_CHATS_PER_CLIENT": 2,          # chats in flight one client address may hold (0: no limit); beyond, 429s
        "CLIENT_CHAT_S_PER_MIN": 90.0,      # seconds of chats one address may have in flight per minute (0: no limit)
        "STREAM_BUFFER_BYTES": 256 << 10,   # a chat stream with more than this unsent (its client does not read) stops
        "CONNECTION_LIMIT": 500,            # open connections the server holds (idle or slow ones included)
        "IDLE_TIMEOUT_S": 30,               # a connection that sends nothing this long, between requests, is closed
        "SCHEMA_TIMEOUT_S": 10.0,           # a response_format schema that compiles longer is refused (400)
        "KV_CACHE_TOKENS": 0,               # tokens of KV cache the server's engine holds for them (0: 2 context windows; at least 1)
        "THREADS": 0,                       # threads the server's engine runs on (0: every core this process may use)
        "KV_CACHE_CONVERSATIONS": 8,        # conversations whose KV cache it keeps between turns, least recent given up first (0: none)
        "DOWNLOAD_PART_BYTES": 4 << 20,     # a browser stores downloads in parts this size: what a drop keeps
        "FLEET_DB": str(REPO / "var" / "fleet.sqlite3"),  # clients' model versions and self-checks
        "NEW_CLIENTS_PER_HOUR": 32,         # new client ids one address may bring to the fleet store an hour (0: no limit)
        "TRUSTED_PROXY": "",                # the reverse proxy's address, whose X-Forwarded-For names the client (fleet sources, per-client limits)
        "LISTEN_HOST": "",                  # the address `python -m router` listens on (it sets this itself)
        "ALLOWED_HOSTS": "",                # comma-separated Host names the server answers (* any; default: see hosts.py)
        "ALLOWED_ORIGINS": "",              # comma-separated origins whose pages may use the API and artifacts (CORS)
        "CROSS_ORIGIN_ISOLATED": True,      # serve every response with COOP/COEP, so the page's CPU build runs on every core (docs/page-and-browsers.md)
        "TEST_HOOKS": False,                # the page's test-only fault injection (device loss); never in production
    }


def from_env() -> dict:
    """SEAM_<NAME> overrides <NAME>, parsed to the default's type."""
    config = defaults()
    for name, default in config.items():
        raw = os.environ.get(f"SEAM_{name}")
        if raw is None:
            continue
        if isinstance(default, bool):
            config[name] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)):
            config[name] = type(default)(raw)
        else:
            config[name] = raw
    return config


def load_policy(path: str) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)
