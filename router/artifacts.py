"""Serves the built artifacts under /models/.

`/models/manifest.json` is never cached (it changes with every build). Model files are addressed by
the catalog version, `/models/<id>/<version>/<file>`, so their bytes never change under a URL and they
are cached for a year as immutable; a request for any other version is a 404. `send_from_directory`
refuses paths that leave the folder (and only a file's plain path is served:
the server-only files are refused by name), and gives ETag and HTTP Range support (resumable downloads).
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from flask import Blueprint, current_app, send_from_directory

from router.errors import ApiError

bp = Blueprint("artifacts", __name__, url_prefix="/models")
MIME = {".wasm": "application/wasm", ".json": "application/json", ".bin": "application/octet-stream"}
YEAR = 365 * 24 * 3600


@bp.get("/manifest.json")
def manifest():
    response = send_from_directory(current_app.extensions["seam"]["catalog"].folder, "manifest.json",
                                   mimetype="application/json", max_age=0, conditional=True)
    response.cache_control.no_cache = True
    return response


@bp.get("/<model_id>/<version>/<path:filename>")
def model_file(model_id: str, version: str, filename: str):
    entry = current_app.extensions["seam"]["catalog"].by_id(model_id)
    if entry is None or entry["version"] != version:
        raise ApiError(404, f"no model {model_id} at version {version}; fetch /models/manifest.json for the current one")
    name = posixpath.normpath(filename)
    if name != filename:  # "./x", "a/../x", "x/." name a file by another path: only the plain one is served
        raise ApiError(404, f"{filename} is not a plain file path; ask for {name}")
    if name.endswith(".so") or posixpath.basename(name) == "build-info.json":
        raise ApiError(404, f"{filename} is not served: it is for the server, not the browser")
    folder = current_app.extensions["seam"]["catalog"].folder / entry["path"]
    response = send_from_directory(folder, filename, mimetype=MIME.get(Path(filename).suffix),
                                   max_age=YEAR, conditional=True)
    response.cache_control.immutable = True
    response.cache_control.public = True
    return response
