"""Browser tests of the admin UI (a package, so its conftest does not shadow tests/conftest.py)."""
