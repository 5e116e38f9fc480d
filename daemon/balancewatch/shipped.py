"""Where the shipped rules, templates and example config are.

In a wheel they are package data under ``balancewatch/_shipped``; in a
checkout (or an editable install) they are the top-level ``rules/``,
``templates/`` and ``config.example.yaml`` of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_IN_WHEEL = _PACKAGE / "_shipped"
_IN_CHECKOUT = _PACKAGE.parent.parent


def _base() -> Path:
    return _IN_WHEEL if _IN_WHEEL.is_dir() else _IN_CHECKOUT


def rules_dir() -> Path:
    return _base() / "rules"


def templates_dir() -> Path:
    return _base() / "templates"


def example_config() -> Path:
    return _base() / "config.example.yaml"
