"""Seam's server: the chat page, the built artifacts, the router and the OpenAI-compatible API.

`create_app()` reads settings from SEAM_* environment variables (router/config.py) and the catalog
from models/manifest.json; it never imports the build pipeline.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from flask import Flask

from router import config as settings
from router import hosts

REPO = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(REPO / "webapp" / "templates"),
                static_folder=str(REPO / "webapp" / "static"))
    app.config.from_mapping(settings.from_env())
    if test_config:
        app.config.from_mapping(test_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from router import api, artifacts, client, cloud, errors, ops, pages, shell
    from router.capacity import ChatSlots
    from router.catalog import Catalog
    from router.fleet import Fleet
    catalog = Catalog.load(Path(app.config["MODELS_DIR"]))
    app.extensions["seam"] = {"catalog": catalog, "policy": settings.load_policy(app.config["POLICY_FILE"]),
                              "cloud": cloud.make_backend(app.config, catalog),
                              "fleet": Fleet(app.config["FLEET_DB"], app.config["NEW_CLIENTS_PER_HOUR"]),
                              "slots": ChatSlots(app.config["MAX_QUEUE"], app.config["MAX_CHATS_PER_CLIENT"],
                                                 app.config["CLIENT_CHAT_S_PER_MIN"])}
    hosts.check_hosts(app)  # first: a rebound name gets no further
    for blueprint in (pages.bp, shell.bp, client.bp, artifacts.bp, api.bp, ops.bp):
        app.register_blueprint(blueprint)
    errors.register(app)
    allow_origins(app, app.config["ALLOWED_ORIGINS"])
    catalog.problem  # noqa: B018 -- a broken catalog is logged at startup, not first at a request
    return app


ORIGIN = re.compile(r"^https?://[^/\s]+$")
# What a page of another origin reads of the answers: downloads resume by Range, and the client names
# the server's limits.
EXPOSED = ["Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Retry-After"]


def allow_origins(app: Flask, setting: str) -> None:
    """SEAM_ALLOWED_ORIGINS: pages of these origins may use the API, the artifacts and the client (CORS:
    their preflights are answered, and every response names the origin). None by default: same origin only."""
    origins = [o.strip().rstrip("/") for o in setting.split(",") if o.strip()]
    for origin in origins:
        if origin != "*" and not ORIGIN.match(origin):
            raise ValueError(f"SEAM_ALLOWED_ORIGINS: {origin!r} is not an origin; write scheme://host[:port], "
                             "comma-separated (or * for any)")
    if not origins:
        return
    from flask_cors import CORS
    CORS(app, origins=origins, allow_headers=["Content-Type", "Range"], expose_headers=EXPOSED, max_age=600)
    logging.getLogger("seam").info("pages of %s may use this server (SEAM_ALLOWED_ORIGINS)", ", ".join(origins))
