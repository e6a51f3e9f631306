"""Asking the server and checking what it answers: its answers over HTTP, and its errors (OpenAI's shape)."""
import requests

from tests.support.models import REAL
from tests.support.structured import response_format

UPSTREAM_SECRET = "sk-test-never-shown-0123456789"  # the upstream's key: it must never reach any response


def app_over(models_dir, tmp_path_factory):
    """The app over this models folder, with a fleet store of its own, for Flask's test client."""
    from router import create_app
    fleet = tmp_path_factory.mktemp("fleet") / "fleet.sqlite3"
    return create_app({"MODELS_DIR": str(models_dir), "TESTING": True, "FLEET_DB": str(fleet)})


def client_keeping_the_secret(app, monkeypatch):
    """A test client of `app` while an upstream key is set, which must never reach any response."""
    monkeypatch.setenv("SEAM_UPSTREAM_API_KEY", UPSTREAM_SECRET)
    return app.test_client()


def assert_error(response, status, param=None, code=None):
    """An OpenAI-shaped error with this status (and param, code), and no stack trace."""
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)


def server_answer(base_url: str, messages: list[dict], max_tokens: int, model: str = REAL) -> dict:
    return server_reply(base_url, {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens})


def server_reply(base_url: str, request: dict) -> dict:
    """The server's answer to a whole chat request (OpenAI's shape), which must succeed."""
    response = requests.post(base_url + "v1/chat/completions", json=request, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def greedy_request(case: dict, model: str) -> dict:
    return {"model": model, "messages": case["messages"], "response_format": response_format(case["schema"]),
            "temperature": 0, "max_tokens": case["max_tokens"]}
