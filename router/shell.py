"""The app shell: what a browser keeps so that the chat page opens and answers with the server unreachable.

- `GET /sw.js`: the page's service worker (webapp/templates/sw.js), rendered with this build's id and the
  shell's URLs: the page, its static files, the client package and the vendor libraries. It keeps them in a
  cache named after the build and answers from it only when the network fails, so an online visit always
  gets the server's files and an offline one gets one build's files, never a mix.
- The build id is a hash of every file the shell holds (and the vendor versions): a server whose page, client
  or libraries changed has another id, so browsers install its shell and drop the old one on the next
  online visit. The client config carries it too (`build`), which names the engine's SharedWorker: tabs of
  two builds never share one.

The model's files are not part of the shell: the engine keeps them in its own cache (model_cache.js).
"""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from flask import Blueprint, current_app, render_template, url_for

from router.client import CLIENT, VENDOR, WEBAPP, vendor_version

bp = Blueprint("shell", __name__)
STATIC = WEBAPP / "static"
TEMPLATES = WEBAPP / "templates"


def static_files() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file())


def client_files() -> list[Path]:
    return sorted(CLIENT.rglob("*.js"))


def shell_files() -> list[tuple[str, Path]]:
    """(URL path, file) of every static file and client module the page may load."""
    return [(url_for("static", filename=p.relative_to(STATIC).as_posix()), p) for p in static_files()] + \
        [(url_for("client.client_file", filename=p.relative_to(CLIENT).as_posix()), p) for p in client_files()]


@cache
def _files_hash() -> str:
    """A hash of the shell's files and the page's templates, by path and content, and the vendor versions:
    read once per process (a server serves the files it started with)."""
    digest = hashlib.sha256()
    for path in [*static_files(), *client_files(), *sorted(TEMPLATES.glob("*"))]:
        digest.update(path.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update("\0".join(f"{name}@{vendor_version(name)}" for name in sorted(VENDOR)).encode())
    return digest.hexdigest()[:16]


def build_id() -> str:
    """This server's shell build: `SHELL_BUILD` where set (tests that upgrade a build), else _files_hash()."""
    return current_app.config.get("SHELL_BUILD") or _files_hash()


def shell_urls() -> list[str]:
    vendors = [url_for("client.vendor", version=vendor_version(name), name=name) for name in sorted(VENDOR)]
    return [url_for("pages.index")] + [url for url, _ in shell_files()] + vendors


@bp.get("/sw.js")
def service_worker():
    """The service worker, never cached without asking: a browser compares it on each visit, and a new build
    shows as new bytes."""
    body = render_template("sw.js", build=build_id(), shell=json.dumps(shell_urls()))
    response = current_app.response_class(body, mimetype="text/javascript")
    response.cache_control.no_cache = True
    return response
