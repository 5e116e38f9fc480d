"""The HTML emails' theme: brand values in templates/_theme.html, CSS written once in the layout and
inlined when an email renders (docs/templates.md, "Theme")."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from balancewatch.alerts.context import sample_alert_context
from balancewatch.config import Settings, load_settings
from balancewatch.core import shipped
from balancewatch.core.limits import RenderBudget
from balancewatch.core.problems import ProblemsError
from balancewatch.render.templates import OverBudgetError, RenderError, load_templates
from balancewatch.runtime.loadset import load_set
from balancewatch.tools.studio.catalogue import Catalogue

BRAND = '{% set brand = "#1d4ed8" %}'
ADD_CREDIT = '{% set add_credit_url = "" %}'


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={}, search=())


def copied(tmp_path: Path, edits: dict[str, tuple[str, str]] | None = None) -> Path:
    """The shipped templates in ``tmp_path``, in each file ``edits`` names (relative path) one
    text replaced by another (the text must be there)."""
    root = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), root)
    for name, (old, new) in (edits or {}).items():
        text = (root / name).read_text()
        assert old in text, (name, old)
        (root / name).write_text(text.replace(old, new, 1))
    return root


def every_html(settings: Settings, templates: Path) -> Iterator[tuple[str, str, str]]:
    """(template, sample, HTML part) of every template with every sample, as the catalogue renders them."""
    catalogue = Catalogue.load(settings, templates)
    assert catalogue.problems == ()
    for template, kind, sample in catalogue.entries():
        preview = catalogue.render(template, kind, sample)
        assert preview.problem is None, preview.problem
        assert preview.rendered is not None
        if preview.rendered.html is not None:
            yield template, sample.name, preview.rendered.html


def test_changing_the_brand_colour_in_the_theme_file_changes_every_html_email(
    tmp_path: Path, settings: Settings
) -> None:
    shipped_html = list(every_html(settings, shipped.templates_dir()))
    assert len({t for t, _, _ in shipped_html}) == 9
    assert all("#1d4ed8" in html for _, _, html in shipped_html)
    templates = copied(tmp_path, {"_theme.html": (BRAND, '{% set brand = "#ff00aa" %}')})
    rebranded = list(every_html(settings, templates))
    assert len(rebranded) == len(shipped_html)
    for template, sample, html in rebranded:
        assert "#ff00aa" in html and "#1d4ed8" not in html, (template, sample)


class _Elements(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_every_element_with_a_class_carries_its_style_inline_and_dark_mode_survives(
    settings: Settings,
) -> None:
    for template, sample, html in every_html(settings, shipped.templates_dir()):
        parser = _Elements()
        parser.feed(html)
        unstyled = [(tag, a["class"]) for tag, a in parser.tags if a.get("class") and not a.get("style")]
        assert unstyled == [], (template, sample)
        assert any(tag == "p" for tag, _ in parser.tags)
        assert all(a.get("style") for tag, a in parser.tags if tag in ("p", "h1", "body"))
        assert html.count("<style") == 1 and "@media (prefers-color-scheme: dark)" in html, template
        assert '<meta name="color-scheme" content="light dark">' in html
        assert '<meta name="supported-color-schemes" content="light dark">' in html
        assert ".card { max-width:" not in html  # the rules themselves were inlined, not kept


class _Counting(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Counting.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.end_headers()
        self.wfile.write(b"p { color: red; }")

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_a_remote_stylesheet_in_a_template_is_never_fetched(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        link = (
            f'<link rel="stylesheet" href="{url}/theme.css">\n<style>@import url("{url}/more.css");</style>\n'
        )
        templates = load_templates(copied(tmp_path, {"_base.html": ("<title>", link + "<title>")}))
        html = templates.render("low-balance", sample_alert_context()).html or ""
        thread.join(0.5)  # a request the inliner made would have arrived by now
    finally:
        server.shutdown()
        server.server_close()
    assert _Counting.requests == []
    assert "theme.css" not in html and "color: red" not in html


def test_the_add_credit_button_appears_in_alerts_only_when_the_link_is_set(
    tmp_path: Path, settings: Settings
) -> None:
    for template, _, html in every_html(settings, shipped.templates_dir()):
        assert "Add credit</a>" not in html and 'class="button-link"' not in html, template
    link = "https://billing.example.com/topup?account={account_id}&currency={currency}"
    templates = copied(tmp_path, {"_theme.html": (ADD_CREDIT, f'{{% set add_credit_url = "{link}" %}}')})
    with_button = {t for t, _, html in every_html(settings, templates) if "Add credit</a>" in html}
    assert with_button == {"low-balance", "runway", "recommended-threshold", "topup-failed"}
    context = sample_alert_context()
    context["account"] = {**context["account"], "id": "acme 42/eu"}
    html = load_templates(templates).render("low-balance", context).html or ""
    assert 'href="https://billing.example.com/topup?account=acme%2042/eu&amp;currency=USD"' in html


def test_a_broken_css_rule_is_one_line_naming_the_file_and_check_reports_it(tmp_path: Path) -> None:
    templates = copied(tmp_path, {"_base.html": (".muted {", ".oops { color red }\n.muted {")})
    line = next(
        n for n, text in enumerate((templates / "_base.html").read_text().splitlines(), 1) if ".oops" in text
    )
    with pytest.raises(RenderError) as caught:
        load_templates(templates).render("low-balance", sample_alert_context())
    expected = (
        f"{templates}/_base.html:{line}: the CSS rule '.oops' has 'color red', which is not property: value"
    )
    assert str(caught.value.problem) == expected
    with pytest.raises(ProblemsError) as checked:
        load_set(shipped.rules_dir(), templates)
    assert expected in str(checked.value).splitlines()


def test_a_style_attribute_the_inliner_cannot_read_is_one_line_naming_its_line(tmp_path: Path) -> None:
    bad = '<p class="note" style="color: red; }{">Broken</p>\n'
    templates = copied(tmp_path, {"low-balance/body.html": ("<p>Hello", bad + "<p>Hello")})
    with pytest.raises(RenderError) as caught:
        load_templates(templates).render("low-balance", sample_alert_context())
    problem = caught.value.problem
    assert (Path(problem.path).relative_to(templates).as_posix(), problem.line) == (
        "low-balance/body.html",
        11,
    )
    assert "the CSS could not be inlined: the attribute style='color: red; }{'" in problem.message
    assert "\n" not in str(problem)


def test_the_size_budget_counts_the_email_with_its_css_inlined(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    (root / "probe").mkdir(parents=True)
    (root / "probe/subject.txt").write_text("Balance")
    (root / "probe/body.txt").write_text("Balance")
    style = "<style>.x { color: #123456; background: #abcdef; padding: 1px 2px 3px 4px; }</style>"
    (root / "probe/body.html").write_text(style + '{% for i in range(60) %}<i class="x"></i>{% endfor %}\n')
    budget = RenderBudget(timeout=2.0, max_size=2000)
    with pytest.raises(OverBudgetError) as caught:
        load_templates(root, budget).render("probe", {})
    message = str(caught.value.problem)
    assert message.startswith(f"{root}/probe/body.html: the email (subject, text and HTML together) came to ")
    assert message.endswith("once its CSS was inlined, more than 2 kB (render.max_size)")


def test_html_nested_too_deep_for_the_inliner_is_refused_before_it_runs(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    (root / "probe").mkdir(parents=True)
    (root / "probe/subject.txt").write_text("Balance")
    (root / "probe/body.txt").write_text("Balance")
    (root / "probe/body.html").write_text(
        "<style>p { margin: 0 }</style>{% for i in range(20000) %}<div>{% endfor %}"
    )
    with pytest.raises(RenderError) as caught:
        load_templates(root).render("probe", {})
    assert "nests elements more than 256 deep; refused before its CSS was inlined" in str(caught.value)
