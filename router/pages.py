"""The chat page."""
from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    """The chat page; until the browser engine lands it lists what `make build-model` produced."""
    manifest = Path(current_app.config["MODELS_DIR"]) / "manifest.json"
    models = json.loads(manifest.read_text())["models"] if manifest.is_file() else []
    return render_template("index.html", models=models)
