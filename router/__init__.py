"""Seam's server: the chat page, the built artifacts, and (as they land) the router and chat APIs."""
from __future__ import annotations

from pathlib import Path

from flask import Flask

REPO = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(REPO / "webapp" / "templates"),
                static_folder=str(REPO / "webapp" / "static"))
    app.config.from_mapping(MODELS_DIR=str(REPO / "models"))
    if test_config:
        app.config.from_mapping(test_config)

    from router import pages
    app.register_blueprint(pages.bp)
    return app
