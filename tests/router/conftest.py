"""The server's app through Flask's test client: over the real default model in models/ (`app`, `client`),
for tests that need its answers or files, and over the tiny model's catalog (`tiny_app`, `tiny_client`,
`tiny_catalog`), for tests that only need a catalog (requests refused, catalog and client files served)."""
import pytest

from tests.support.api import app_over, client_keeping_the_secret
from tests.support.models import catalog_of


@pytest.fixture(scope="module")
def app(default_built, tmp_path_factory):
    return app_over(default_built, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_app(tiny_models, tmp_path_factory):
    return app_over(tiny_models, tmp_path_factory)


@pytest.fixture
def client(app, monkeypatch):
    return client_keeping_the_secret(app, monkeypatch)


@pytest.fixture
def tiny_client(tiny_app, monkeypatch):
    return client_keeping_the_secret(tiny_app, monkeypatch)


@pytest.fixture(scope="module")
def tiny_catalog(tiny_models) -> dict:
    """The tiny model's catalog (manifest.json): its variants q0f32, q4f16_1 and q4f32_1, in that order."""
    return catalog_of(tiny_models)
