"""The server's app over the real default model in models/, through Flask's test client."""
import pytest

from router import create_app

UPSTREAM_SECRET = "sk-test-never-shown-0123456789"


@pytest.fixture(scope="module")
def app(default_built, tmp_path_factory):
    fleet = tmp_path_factory.mktemp("fleet") / "fleet.sqlite3"
    return create_app({"MODELS_DIR": str(default_built), "TESTING": True, "FLEET_DB": str(fleet)})


@pytest.fixture
def client(app, monkeypatch):
    monkeypatch.setenv("SEAM_UPSTREAM_API_KEY", UPSTREAM_SECRET)  # must never reach any response
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


# A probe report of a WebGPU device; a SwiftShader adapter, and a probe report of a client that measured its decode speed there.
PROBE = {"schema_version": 1, "webgpu": {"available": True, "features": [],
                                         "limits": {"maxStorageBufferBindingSize": 134217728, "maxBufferSize": 268435456}},
         "preference": "auto", "prompt_tokens": 12, "cached_models": [], "benchmark": {"bandwidth_gbps": 2.0}}

SWIFTSHADER = {"available": True, "features": [], "adapter": {"vendor": "google", "architecture": "swiftshader",
                                                              "is_fallback_adapter": True},
               "limits": {"maxStorageBufferBindingSize": 134217728, "maxBufferSize": 268435456}}


def measuring_probe(entry, client_id, decode):
    return {**PROBE, "webgpu": SWIFTSHADER, "client_id": client_id, "benchmark": {"bandwidth_gbps": 2.0},
            "cached_models": [{"id": entry["id"], "version": entry["version"]}],
            "measured": [{"id": entry["id"], "version": entry["version"], "kernels": "software",
                          "prefill_tokens_per_s": 4 * decode, "decode_tokens_per_s": decode}]}
