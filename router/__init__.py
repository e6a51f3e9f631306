"""Seam's server: the chat page, the built artifacts, the router and the OpenAI-compatible API.

`create_app()` reads settings from SEAM_* environment variables (router/config.py) and the catalog
from models/manifest.json; it never imports the build pipeline.
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from router import config as settings

REPO = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(REPO / "webapp" / "templates"),
                static_folder=str(REPO / "webapp" / "static"))
    app.config.from_mapping(settings.from_env())
    if test_config:
        app.config.from_mapping(test_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from router import api, artifacts, cloud, errors, ops, pages
    from router.capacity import ChatSlots
    from router.catalog import Catalog
    from router.fleet import Fleet
    catalog = Catalog.load(Path(app.config["MODELS_DIR"]))
    app.extensions["seam"] = {"catalog": catalog, "policy": settings.load_policy(app.config["POLICY_FILE"]),
                              "cloud": cloud.make_backend(app.config, catalog), "fleet": Fleet(app.config["FLEET_DB"]),
                              "slots": ChatSlots(app.config["MAX_QUEUE"])}
    for blueprint in (pages.bp, artifacts.bp, api.bp, ops.bp):
        app.register_blueprint(blueprint)
    errors.register(app)
    catalog.problem  # noqa: B018 -- a broken catalog is logged at startup, not first at a request
    return app
