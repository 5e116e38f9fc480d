"""PNG screenshots of each template's emails at desktop (600 px) and phone (390 px) widths.

For ``balancewatch preview --screenshots DIR``: one email per (template, kind), rendered with the
kind's first sample, written as ``TEMPLATE.KIND.SAMPLE.desktop.png`` and ``...phone.png``
(the whole page, however long). Needs the ``playwright`` package (in the ``test`` extra) and a
Chromium (Debian's: ``apt-get install chromium``); Playwright's own browser downloads are not
used. The HTML is shown with JavaScript off, as mail clients do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from balancewatch.tools.studio.catalogue import Catalogue

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Route

CHROMIUM = "/usr/bin/chromium"
WIDTHS = {"desktop": 600, "phone": 390}


class ScreenshotError(Exception):
    """Screenshots cannot be taken at all (no playwright, no browser); one line."""


@dataclass(frozen=True)
class Shot:
    """The files written for one email; none for a template with no HTML part, or when it
    fails (``problem``, one line: file:line and message)."""

    template: str
    kind: str
    sample: str
    files: list[Path] = field(default_factory=list)
    problem: str = ""


def take(catalogue: Catalogue, directory: Path, executable: str = CHROMIUM) -> list[Shot]:
    """Screenshots of every (template, kind) of ``catalogue`` into ``directory`` (created), with
    the Chromium at ``executable``. Raises ScreenshotError when the browser cannot run."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise ScreenshotError(
            "screenshots need the playwright package: pip install playwright "
            "(it is in balancewatch's test extra)"
        ) from None
    if not Path(executable).is_file():
        raise ScreenshotError(f"no browser at {executable}: install Chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable)
        except Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ScreenshotError(f"cannot start {executable}: {first}") from None
        try:
            return shoot(catalogue, directory, browser)
        finally:
            browser.close()


def shoot(
    catalogue: Catalogue, directory: Path, browser: Browser, only: Iterable[str] | None = None
) -> list[Shot]:
    """Like ``take`` with a running ``browser``; ``only`` limits it to the templates named."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = set(only) if only is not None else None
    shots = []
    contexts = {
        width: browser.new_context(java_script_enabled=False, viewport={"width": pixels, "height": 800})
        for width, pixels in WIDTHS.items()
    }
    for context in contexts.values():
        # Offline, as the preview: an image or font on a server that never answers must not
        # hold a screenshot (it shows as missing, as in a mail client that blocks remote content).
        context.route(
            "**/*",
            lambda route: route.abort() if not route.request.url.startswith("data:") else route.continue_(),
        )
    try:
        for name in catalogue.names:
            if wanted is not None and name not in wanted:
                continue
            for kind in catalogue.uses[name]:
                sample = catalogue.samples(kind)[0]
                preview = catalogue.render(name, kind, sample)
                shot = Shot(name, kind, sample.name)
                if preview.problem is not None or preview.rendered is None:
                    shots.append(Shot(name, kind, sample.name, problem=str(preview.problem)))
                    continue
                if preview.rendered.html is None:
                    shots.append(shot)  # text only: nothing to show at a width
                    continue
                for width, context in contexts.items():
                    page = context.new_page()
                    try:
                        page.set_content(preview.rendered.html, wait_until="load")
                        path = directory / f"{name}.{kind}.{sample.name}.{width}.png"
                        page.screenshot(path=str(path), full_page=True)
                        shot.files.append(path)
                    finally:
                        page.close()
                shots.append(shot)
    finally:
        for context in contexts.values():
            context.close()
    return shots


def _offline(route: Route) -> None:
    if route.request.url.startswith("data:"):
        route.continue_()
    else:
        route.abort()
