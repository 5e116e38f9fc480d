"""``balancewatch preview`` in a real browser: Debian's Chromium driven by Playwright.

The browser is ``/usr/bin/chromium`` (``.ci/run`` installs Debian's ``chromium`` package),
never one Playwright downloads. Without it these tests are skipped, saying why, except under
``CI=true``, where they fail: CI must prove the preview works in a browser. One browser and one
preview server serve the whole module; tests that edit a template put it back.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from balancewatch.config import load_settings
from balancewatch.core import shipped
from balancewatch.tools.studio.catalogue import Catalogue
from balancewatch.tools.studio.screenshots import CHROMIUM, shoot
from tests.test_preview import Served, copied_templates, serve, settings_for, wait_until

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if not IN_CI:  # under CI a missing playwright fails the collection
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from playwright.sync_api import (  # noqa: E402
    Browser,
    ConsoleMessage,
    Frame,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

BROWSER = os.environ.get("BALANCEWATCH_TEST_CHROMIUM", CHROMIUM)  # another Chromium, to try one
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


def unavailable(reason: str) -> None:
    """Skip the browser tests, or under CI=true fail them, for ``reason``."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(BROWSER).is_file():
        unavailable(f"{BROWSER} is missing (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=BROWSER)
        except Exception as exc:
            unavailable(f"cannot run {BROWSER}: {(str(exc).strip() or repr(exc)).splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("preview")
    yield from serve(copied_templates(root), settings_for(root))


class Errors(list[str]):
    """The console errors and uncaught exceptions of a page, as they happen."""

    def watch(self, page: Page) -> Page:
        page.on("console", lambda message: self._console(message))
        page.on("pageerror", lambda error: self.append(f"page error: {error}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.append(f"console: {message.text} ({message.location.get('url')})")


def first_samples(site: Served) -> list[str]:
    """The message path of each template's first sample (its first use)."""
    catalogue = site.studio.snapshot.catalogue
    paths = []
    for name in catalogue.names:
        kind, sample = catalogue.find(name)
        paths.append(f"m/{name}/{kind}/{sample.name}")
    return paths


def sideways(page_or_frame: Page | Frame) -> tuple[int, int]:
    """The scroll width and the viewport width of a page or frame's document."""
    width, inner = page_or_frame.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return int(width), int(inner)


def phone_frame(page: Page) -> Frame:
    element = page.query_selector("iframe.phone")
    frame = element.content_frame() if element is not None else None
    assert frame is not None, "no phone frame"
    return frame


@contextmanager
def edited(site: Served, edits: dict[Path, str]) -> Iterator[None]:
    """Each file holds its new text inside the block; afterwards its old text, served again."""
    originals = {path: path.read_text() for path in edits}
    for path, text in edits.items():
        path.write_text(text)
    try:
        yield
    finally:
        before = site.generation()
        for path, text in originals.items():
            path.write_text(text)
        wait_until(lambda: site.generation() > before, "the preview to reload the files put back")


def test_each_templates_first_sample_loads_cleanly_and_nothing_scrolls_sideways_on_a_phone(
    site: Served, browser: Browser
) -> None:
    errors = Errors()
    context = browser.new_context(viewport=DESKTOP)
    page = errors.watch(context.new_page())
    shipped = first_samples(site)
    assert len(shipped) >= 9
    too_wide = {}
    for path in [*shipped, "m/low-balance/alert/long-name", "m/usage-report/report-usage/month"]:
        page.set_viewport_size(DESKTOP)
        page.goto(site.url + path)
        expect(page.locator("h1.subject")).not_to_be_empty()
        assert page.locator(".problems").count() == 0, page.locator(".problems").inner_text()
        assert [f.url for f in page.frames[1:]] == [site.url + path.replace("m/", "raw/", 1)] * 2
        expect(page.frame_locator("iframe.desktop").locator("body")).not_to_be_empty()
        expect(page.frame_locator("iframe.phone").locator("body")).not_to_be_empty()
        assert 380 < sideways(phone_frame(page))[1] <= 390  # the phone frame is a phone's width

        page.set_viewport_size(PHONE)
        width, inner = sideways(page)
        assert width <= inner, f"{path}: the page is {width} px wide at a {inner} px viewport"
        width, inner = sideways(phone_frame(page))
        assert inner == PHONE["width"]  # on a phone the phone frame is the whole width
        if width > inner:
            too_wide[path] = f"{width} px wide in its {inner} px frame"
    assert too_wide == {}
    assert errors == []
    context.close()


def test_saving_a_template_updates_the_open_page_within_a_second(site: Served, browser: Browser) -> None:
    errors = Errors()
    context = browser.new_context(viewport=DESKTOP)
    page = errors.watch(context.new_page())
    page.goto(site.url + "m/low-balance/alert/crossed")
    body = site.templates / "low-balance" / "body.txt"
    html = site.templates / "low-balance" / "body.html"
    new_html = html.read_text().replace("{% block content %}", "{% block content %}<p>EDITED HTML</p>")
    with ExitStack() as put_back:
        started = time.monotonic()
        # The page reloads itself (its frames too) once the server has the new files.
        with page.expect_event("load", timeout=1000):
            put_back.enter_context(
                edited(site, {body: "EDITED TEXT for {{ account.name }}\n", html: new_html})
            )
        assert time.monotonic() - started < 1.0
        expect(page.locator("pre.text")).to_have_text("EDITED TEXT for Acme Messaging Ltd\n")
        expect(page.frame_locator("iframe.desktop").locator("body")).to_contain_text("EDITED HTML")
        expect(page.frame_locator("iframe.phone").locator("body")).to_contain_text("EDITED HTML")
    expect(page.locator("pre.text")).not_to_contain_text("EDITED")  # and again once put back
    assert errors == []
    context.close()


def test_a_broken_template_shows_its_file_and_line(site: Served, browser: Browser) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(site.url + "m/runway/alert/crossed")
    body = site.templates / "runway" / "body.txt"
    with ExitStack() as put_back:
        with page.expect_event("load", timeout=2000):
            put_back.enter_context(edited(site, {body: "Hello\n\n{{ account.no_such_key }}\n"}))
        problem = page.locator("pre.problem")
        expect(problem).to_contain_text(f"{body}:3: ")
        expect(problem).to_contain_text("no_such_key")
        expect(page.get_by_text("This template fails")).to_be_visible()
    page.close()


def test_screenshots_are_taken_at_both_widths(browser: Browser, site: Served, tmp_path: Path) -> None:
    [shot] = shoot(site.studio.snapshot.catalogue, tmp_path, browser, only=["low-balance"])
    assert shot.problem == "" and [p.name for p in shot.files] == [
        "low-balance.alert.crossed.desktop.png",
        "low-balance.alert.crossed.phone.png",
    ]
    for path, width in zip(shot.files, (600, 390), strict=True):
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">I", header[16:20])[0] == width


def test_a_missing_browser_fails_under_ci_and_is_skipped_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match=r"^no chromium \(CI=true: the browser tests must run\)$"):
        unavailable("no chromium")
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match=r"^no chromium$"):
        unavailable("no chromium")


def test_no_shipped_email_of_any_sample_is_wider_than_a_phone(site: Served, browser: Browser) -> None:
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    too_wide = {}
    for template, kind, sample in site.studio.snapshot.catalogue.entries():
        page.goto(f"{site.url}raw/{template}/{kind}/{sample.name}")
        width, inner = sideways(page)
        if width > inner:
            too_wide[f"{template}/{kind}/{sample.name}"] = width
    context.close()
    assert too_wide == {}


def test_a_screenshot_never_waits_on_a_remote_image(browser: Browser, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    body = templates / "_base.html"
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/logo.png"
        body.write_text(body.read_text().replace("<body>", f'<body><img src="{url}">', 1))
        catalogue = Catalogue.load(load_settings(environ={}, search=()), templates)
        started = time.monotonic()
        [shot] = shoot(catalogue, tmp_path / "shots", browser, only=["low-balance"])
    assert shot.problem == "" and len(shot.files) == 2
    assert time.monotonic() - started < 10
