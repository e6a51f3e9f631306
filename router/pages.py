"""The chat page: a client of the Seam client package (webapp/client/), like any other page. The template
gets only what it draws (the model names, the request limits); the page's script connects to the server
as `Seam.connect({ server: location.origin })` and learns everything else from it."""
from __future__ import annotations

import json

from flask import Blueprint, current_app, render_template

from router import grammar
from router.shell import build_id
from router.sampling import SEED_MAX

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    """The chat page."""
    limits = current_app.config
    return render_template("index.html", test_hooks=bool(limits["TEST_HOOKS"]), max_tokens_limit=limits["MAX_TOKENS_LIMIT"],
                           model_names=current_app.extensions["seam"]["catalog"].model_names(),
                           default_max_tokens=limits["DEFAULT_MAX_TOKENS"], seed_max=SEED_MAX,
                           example_schema=json.dumps(grammar.EXAMPLE_SCHEMA, indent=2), build=build_id())
