"""Which Host names the server answers, and who may read its operator views.

A server on a loopback address answers only its own address and localhost's names: a page of another
site whose name an attacker points at 127.0.0.1 (DNS rebinding) reaches it under that name, and is
refused. A server on every interface (0.0.0.0, ::) cannot know its names: it answers any, unless
SEAM_ALLOWED_HOSTS lists them. A Host it does not answer gets a 400 with code host_not_allowed (Flask's
TRUSTED_HOSTS would, but cannot match an IPv6 address).

/api/fleet and /metrics tell an operator about every client; with SEAM_OPERATOR_TOKEN set they need it
as a bearer token. Like the upstream key, it is read from the environment when used, never stored in
the app's config.
"""
from __future__ import annotations

import hmac
import os

from flask import request

from router.errors import ApiError

LOCAL_NAMES = ["localhost", "127.0.0.1", "[::1]"]  # an IPv6 address is written in brackets in a Host header
EVERY_INTERFACE = ("0.0.0.0", "::")


def trusted_hosts(config) -> list[str] | None:
    """The Host names to answer; None: any."""
    listed = [name.strip() for name in config["ALLOWED_HOSTS"].split(",") if name.strip()]
    if listed:
        return None if "*" in listed else listed
    listen = config["LISTEN_HOST"].strip("[]")
    if not listen or listen in EVERY_INTERFACE:  # not run by `python -m router`, or on every interface
        return None
    listen = f"[{listen}]" if ":" in listen else listen
    return LOCAL_NAMES + ([listen] if listen not in LOCAL_NAMES else [])


def check_hosts(app) -> None:
    """Refuses, before anything else, a request whose Host header names none of trusted_hosts()."""
    names = trusted_hosts(app.config)
    if names is None:
        return
    names = {name.lower() for name in names}

    @app.before_request
    def host_is_answered():
        if host_name(request.headers.get("Host", "")) not in names:
            raise ApiError(400, "this server does not answer that Host name: list it in SEAM_ALLOWED_HOSTS",
                           code="host_not_allowed")


def host_name(header: str) -> str:
    """A Host header without its port: "[::1]:8000" is "[::1]", "localhost:8000" is "localhost"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[:header.find("]") + 1]
    return header.rsplit(":", 1)[0]


def operator_only() -> None:
    """Refuses a request without the operator's token, where one is set."""
    token = os.environ.get("SEAM_OPERATOR_TOKEN")
    if not token:
        return
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "this view is for the server's operator: send SEAM_OPERATOR_TOKEN as "
                       "'Authorization: Bearer <token>'", code="operator_token_required",
                       headers={"WWW-Authenticate": "Bearer"})
