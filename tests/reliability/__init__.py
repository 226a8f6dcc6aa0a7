"""Hostile-input tests (issue #13); a package so its conftest does not shadow tests/conftest.py."""
