"""The chat page. Everything the page's scripts need (catalog, URLs) goes in as one JSON object."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, url_for

bp = Blueprint("pages", __name__)


def page_config() -> dict:
    catalog = current_app.extensions["seam"]["catalog"]
    models = [{**{k: m[k] for k in ("id", "model", "quantization", "version", "files", "download_bytes",
                                    "context_window_size", "prefill_chunk_size", "requirements", "self_check")},
               "base_url": url_for("artifacts.model_file", model_id=m["id"], version=m["version"], filename="x")[:-1]}
              for m in catalog.models]
    return {"models": models,
            "endpoints": {"route": url_for("api.route"), "chat": url_for("api.chat_completions"),
                          "models": url_for("api.models"), "manifest": url_for("artifacts.manifest")}}


@bp.get("/")
def index():
    """The chat page."""
    return render_template("index.html", page_config=page_config())
