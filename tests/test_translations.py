"""The shipped emails in German and Hindi: complete catalogs, a message template in step with
the templates, and every shipped email rendered in de_DE and hi_IN with no English left.

English is what the templates say; tests/test_golden_emails.py shows it did not change when the
words were marked for translation. Here: what a German or Hindi reader gets.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from balancewatch.config import load_settings
from balancewatch.core import shipped
from balancewatch.liveset import Sample
from balancewatch.render.templates import TemplateSet, read_template_files
from balancewatch.tools.studio.catalogue import Catalogue

TEMPLATES = shipped.templates_dir()
POT = TEMPLATES / "messages.pot"
LANGUAGES = {"de": "de_DE", "hi": "hi_IN"}
# The operators' report is read by the operator, in English.
ENGLISH_ONLY = {"low-balance-report"}
# A fragment of an English sentence this long left in a translated email is a missed translation.
LONGEST_ALLOWED = 20


def catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def ids(cat: Catalog) -> set[object]:
    return {m.id if isinstance(m.id, str) else tuple(m.id) for m in cat if m.id}


def forms(value: object) -> list[str]:
    return list(value) if isinstance(value, (list, tuple)) else [str(value or "")]


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_message_is_translated_and_none_is_fuzzy(language: str) -> None:
    po = TEMPLATES / "locale" / language / "LC_MESSAGES" / "messages.po"
    cat = catalog(po, language)
    assert cat.num_plurals == 2
    messages = [m for m in cat if m.id]
    assert messages
    untranslated = [m.id for m in messages if not all(s.strip() for s in forms(m.string))]
    assert untranslated == []
    plurals = [m for m in messages if m.pluralizable]
    assert plurals and all(len(forms(m.string)) == cat.num_plurals for m in plurals)
    assert [m.id for m in messages if m.fuzzy] == []
    assert not cat.fuzzy


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_each_catalog_has_exactly_the_messages_of_the_template(language: str) -> None:
    po = TEMPLATES / "locale" / language / "LC_MESSAGES" / "messages.po"
    assert ids(catalog(po, language)) == ids(catalog(POT))
    assert not catalog(po, language).obsolete


def test_the_shipped_message_template_is_up_to_date_with_the_templates(tmp_path: Path) -> None:
    pybabel = Path(sys.executable).parent / "pybabel"
    out = tmp_path / "messages.pot"
    subprocess.run(
        [str(pybabel), "-q", "extract", "-F", str(TEMPLATES / "babel.cfg"), "-o", str(out), str(TEMPLATES)],
        check=True,
        capture_output=True,
    )
    fresh, shipped_ids = ids(catalog(out)), ids(catalog(POT))
    assert sorted(map(str, fresh - shipped_ids)) == [], "run pybabel extract (docs/templates.md, Languages)"
    assert sorted(map(str, shipped_ids - fresh)) == [], "run pybabel extract (docs/templates.md, Languages)"


def test_the_shipped_templates_and_catalogs_load_without_problems() -> None:
    templates = TemplateSet(read_template_files(TEMPLATES), TEMPLATES)
    assert templates.compile_problems() == []


def english_fragments() -> list[str]:
    """The literal runs of the message ids (between placeholders and markup), longest first."""
    fragments: set[str] = set()
    for message in catalog(POT):
        for text in forms(message.id):
            for piece in re.split(r"%\(\w+\)s|<[^>]+>|\n", text):
                piece = piece.strip(" .,:;()")
                if len(piece) > LONGEST_ALLOWED:
                    fragments.add(piece)
    return sorted(fragments, key=len, reverse=True)


CATALOGUE = Catalogue.load(load_settings(environ={}, search=()))
ENTRIES = [(t, k, s) for t, k, s in CATALOGUE.entries() if t not in ENGLISH_ONLY]
FRAGMENTS = english_fragments()


def test_the_check_below_has_english_to_look_for() -> None:
    assert "Services that draw on this balance stop until credit is added" in FRAGMENTS
    assert len(ENTRIES) > 40


@pytest.mark.parametrize("locale", sorted(LANGUAGES.values()))
@pytest.mark.parametrize(
    ("template", "kind", "sample"),
    ENTRIES,
    ids=[f"{t}/{k}/{s.name}" for t, k, s in ENTRIES],
)
def test_every_shipped_email_renders_translated(
    template: str, kind: str, sample: Sample, locale: str
) -> None:
    context = {**sample.context, "locale": locale}
    preview = CATALOGUE.preview(template, kind, sample.name, sample.title, context)
    assert preview.rendered is not None, preview.problem
    rendered = preview.rendered
    parts = {"subject": rendered.subject, "text": rendered.text, "html": rendered.html or ""}
    left = {name: [f for f in FRAGMENTS if f in text] for name, text in parts.items()}
    assert left == {"subject": [], "text": [], "html": []}
    if locale == "hi_IN":
        assert re.search("[\u0900-\u097f]", rendered.subject)
        assert re.search("[\u0900-\u097f]", rendered.text)


def test_an_english_locale_and_an_unknown_language_read_as_the_templates_say() -> None:
    template, kind, sample = next(e for e in ENTRIES if e[0] == "low-balance")
    english = CATALOGUE.render(template, kind, sample).rendered
    for locale in ("en_GB", "fr_FR"):
        other = CATALOGUE.preview(
            template, kind, sample.name, sample.title, {**sample.context, "locale": locale}
        )
        assert other.rendered is not None and english is not None
        assert other.rendered.subject.startswith("Acme Messaging Ltd: USD balance")
        assert "Add credit to keep your services running." in other.rendered.text
