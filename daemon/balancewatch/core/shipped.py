"""Where the shipped rules, templates, example config, systemd unit and its docs page are.

In a wheel they are package data under ``balancewatch/_shipped`` (the docs
page is also installed as ``<prefix>/share/doc/balancewatch/systemd.md``); in a
checkout (or an editable install) they are the top-level ``rules/``,
``templates/``, ``config.example.yaml``, ``systemd/`` and ``docs/`` of the
repository.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # balancewatch/, this module being balancewatch/core/
_IN_WHEEL = _PACKAGE / "_shipped"
_IN_CHECKOUT = _PACKAGE.parent.parent
_DOC_IN_PREFIX = Path("share", "doc", "balancewatch", "systemd.md")


def _base() -> Path:
    return _IN_WHEEL if _IN_WHEEL.is_dir() else _IN_CHECKOUT


def rules_dir() -> Path:
    return _base() / "rules"


def templates_dir() -> Path:
    return _base() / "templates"


def example_config() -> Path:
    return _base() / "config.example.yaml"


def systemd_unit() -> Path:
    """The unit file as shipped, with the paths of the README's layout (``/opt/balancewatch``)."""
    return _base() / "systemd" / "balancewatch.service"


def systemd_doc(data_dir: Path | None = None) -> Path | None:
    """The installed page the unit's ``Documentation=`` names, or None when none is on disk.

    ``data_dir`` is the installation's data prefix (default: this environment's,
    where the wheel put ``share/doc/balancewatch/systemd.md``); a checkout has
    the page under ``docs/``.
    """
    prefix = Path(sysconfig.get_path("data")) if data_dir is None else data_dir
    for candidate in (prefix / _DOC_IN_PREFIX, _base() / "docs" / "systemd.md"):
        if candidate.is_file():
            return candidate
    return None
