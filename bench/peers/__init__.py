"""The peers `make bench` compares against, set up from the registries only (PyPI, npm): see setup.py."""
