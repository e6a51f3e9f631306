"""OpenAI-style error responses: `{"error": {"message", "type", "param", "code"}}`, never a stack trace."""
from __future__ import annotations

from flask import jsonify

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
         405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
         502: "upstream_error", 503: "server_error", 504: "upstream_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None):
    return jsonify(error_body(status, message, param, code)), status, headers or {}


def register(app) -> None:
    app.register_error_handler(ApiError, lambda e: error_response(e.status, e.message, e.param, e.code, e.headers))
    app.register_error_handler(400, lambda e: error_response(400, "the request body is not valid JSON"))
    app.register_error_handler(404, lambda e: error_response(404, "no such path on this server"))
    app.register_error_handler(405, lambda e: error_response(405, "this path does not take that HTTP method"))
    app.register_error_handler(413, lambda e: error_response(
        413, f"the request body is larger than this server's limit of {app.config['MAX_CONTENT_LENGTH']} bytes",
        code="request_too_large"))

    @app.errorhandler(Exception)
    def unexpected(error):  # logged with its trace on the server, a plain message to the client
        if hasattr(error, "code") and isinstance(error.code, int) and error.code < 500:
            return error_response(error.code, str(getattr(error, "description", error)))
        app.logger.exception("unhandled error")
        return error_response(500, "the server failed to answer this request; it keeps serving others")
