"""Emails in the account's language: catalogs in the templates directory, picked by the locale."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from balancewatch.core import shipped
from balancewatch.render.templates import RenderError, TemplateSet, read_template_files

GERMAN = r"""
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

msgid "Your balance is low"
msgstr "Ihr Guthaben ist niedrig"

msgid "Hello %(name)s,"
msgstr "Hallo %(name)s,"

msgid "%(num)s day left"
msgid_plural "%(num)s days left"
msgstr[0] "noch %(num)s Tag"
msgstr[1] "noch %(num)s Tage"

msgid "Not translated yet"
msgstr ""
"""

# A block tag eats the line break after it (trim_blocks): a {% trans %} block ending a line is
# followed by an empty one; a line of its own reads better as {{ _("...") }}.
BODY = """\
{{ _("Hello %(name)s,", name=name) }}
{% trans num=days %}{{ num }} day left{% pluralize %}{{ num }} days left{% endtrans %}

{{ _("Not translated yet") }}
"""


def directory(tmp_path: Path, catalog: str = GERMAN, language: str = "de") -> Path:
    root = tmp_path / "templates"
    (root / "greet").mkdir(parents=True)
    (root / "greet" / "subject.txt").write_text("{% trans %}Your balance is low{% endtrans %}")
    (root / "greet" / "body.txt").write_text(BODY)
    (root / "greet" / "body.html").write_text("<p>{% trans name=name %}Hello {{ name }},{% endtrans %}</p>")
    po = root / "locale" / language / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    po.write_text(textwrap.dedent(catalog).lstrip())
    return root


def render(root: Path, locale: str, days: int = 2, name: str = "Acme") -> tuple[str, str, str | None]:
    templates = TemplateSet(read_template_files(root), root)
    assert templates.compile_problems() == []
    rendered = templates.render("greet", {"locale": locale, "days": days, "name": name})
    return rendered.subject, rendered.text, rendered.html


@pytest.mark.parametrize("locale", ["de_DE", "de_AT", "de", "de-DE"])
def test_the_accounts_language_picks_the_catalog(tmp_path: Path, locale: str) -> None:
    subject, text, _html = render(directory(tmp_path), locale)
    assert subject == "Ihr Guthaben ist niedrig"
    assert text == "Hallo Acme,\nnoch 2 Tage\nNot translated yet\n"


@pytest.mark.parametrize("locale", ["en_US", "fr_FR", "", "hi_IN"])
def test_without_a_catalog_for_the_language_the_words_stay_as_written(tmp_path: Path, locale: str) -> None:
    subject, text, _html = render(directory(tmp_path), locale)
    assert (subject, text) == ("Your balance is low", "Hello Acme,\n2 days left\nNot translated yet\n")


def test_plurals_follow_the_catalogs_rule(tmp_path: Path) -> None:
    assert render(directory(tmp_path), "de_DE", days=1)[1].splitlines()[1] == "noch 1 Tag"


def test_values_in_a_translated_html_sentence_are_escaped(tmp_path: Path) -> None:
    _subject, _text, html = render(directory(tmp_path), "de_DE", name="<b>Acme</b>")
    assert html is not None and "<p>Hallo &lt;b&gt;Acme&lt;/b&gt;,</p>" in html


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (
            'msgid "Hello %(name)s,"\nmsgstr "Hallo %(nom)s,"\n',
            "has the placeholders nom; the original has name",
        ),
        ('msgid "Hello %(name)s,"\nmsgstr "Hallo %(name)999999999s,"\n', "without a width or precision"),
        ('msgid "Hello %(name)s,"\nmsgstr "Hallo\n', "not a valid message catalog line"),
        ('msgid "Hello %(name)s,"\nmsgstr Hallo\n', "not a valid message catalog line"),
    ],
)
def test_a_catalog_a_designer_broke_is_a_problem_naming_its_file_and_line(
    tmp_path: Path, broken: str, complaint: str
) -> None:
    root = directory(tmp_path, catalog=broken)
    [problem] = TemplateSet(read_template_files(root), root).compile_problems()
    assert problem.path == f"{root}/locale/de/LC_MESSAGES/messages.po"
    assert problem.line in (1, 2) and complaint in problem.message


def test_pybabel_extracts_the_words_of_the_templates_with_the_shipped_config(tmp_path: Path) -> None:
    root = directory(tmp_path)
    pot = tmp_path / "messages.pot"
    config = shipped.templates_dir() / "babel.cfg"
    pybabel = Path(__import__("sys").executable).parent / "pybabel"
    subprocess.run(
        [str(pybabel), "extract", "-F", str(config), "-o", str(pot), str(root)],
        check=True,
        capture_output=True,
    )
    extracted = pot.read_text()
    for message in ("Your balance is low", "Hello %(name)s,", "%(num)s days left", "Not translated yet"):
        assert f'"{message}"' in extracted


# --- what a template or a catalog may not do ----------------------------------------------------


def one_template(tmp_path: Path, body: str, catalog: str = GERMAN) -> TemplateSet:
    root = directory(tmp_path, catalog=catalog)
    (root / "greet" / "body.txt").write_text(body)
    return TemplateSet(read_template_files(root), root)


def test_a_sized_placeholder_in_a_templates_own_text_is_refused_before_it_allocates(tmp_path: Path) -> None:
    templates = one_template(tmp_path, 'Hi\n{{ _("%(n)300000000d", n=1) | length }}\n')
    with pytest.raises(RenderError) as caught:
        templates.render("greet", {"locale": "en_US", "days": 1, "name": "A"})
    problem = caught.value.problem
    assert problem.path.endswith("greet/body.txt") and problem.line == 2
    assert "write placeholders as %(name)s" in problem.message


def test_too_many_placeholders_in_one_message_are_refused(tmp_path: Path) -> None:
    templates = one_template(tmp_path, "{{ _(" + repr("%(x)s" * 40) + ", x=name) }}\n")
    with pytest.raises(RenderError, match="40 placeholders; at most 32"):
        templates.render("greet", {"locale": "en_US", "days": 1, "name": "A"})


def test_translating_a_value_rather_than_literal_text_is_a_problem_with_its_line(tmp_path: Path) -> None:
    templates = one_template(tmp_path, "Hi\n{{ _(name) }}\n{{ ngettext(name, 'b', 2) }}\n")
    problems = [p for p in templates.compile_problems() if "literal text only" in p.message]
    assert [(p.line, p.message.split("()")[0]) for p in problems] == [(2, "_"), (3, "ngettext")]


def test_a_translation_may_not_add_markup_its_original_lacks(tmp_path: Path) -> None:
    evil = GERMAN.replace(
        'msgstr "Hallo %(name)s,"', 'msgstr "Hallo %(name)s, <a href=\\"https://evil.example\\">hier</a>"'
    )
    [problem] = TemplateSet(read_template_files(directory(tmp_path, evil)), tmp_path).compile_problems()
    assert "adds the markup" in problem.message and "a translation may use only the tags" in problem.message


def test_a_catalog_header_that_cannot_be_used_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    broken = GERMAN.replace("plural=(n != 1);", "plural=(n != 1")
    root = directory(tmp_path, broken)
    [problem] = TemplateSet(read_template_files(root), root).compile_problems()
    assert problem.path.endswith("messages.po") and "its header cannot be used" in problem.message


def test_a_fuzzy_translation_is_not_used_and_never_blocks_the_set(tmp_path: Path) -> None:
    fuzzy = GERMAN.replace(
        'msgid "Hello %(name)s,"\nmsgstr "Hallo %(name)s,"',
        '#, fuzzy\nmsgid "Hello %(name)s,"\nmsgstr "Hallo %(nom)s,"',
    )
    root = directory(tmp_path, fuzzy)
    templates = TemplateSet(read_template_files(root), root)
    assert templates.compile_problems() == []
    assert templates.render("greet", {"locale": "de_DE", "days": 2, "name": "Acme"}).text.startswith(
        "Hello Acme,\n"
    )


def test_a_catalog_where_none_is_read_is_a_problem_rather_than_ignored(tmp_path: Path) -> None:
    root = directory(tmp_path)
    misplaced = root / "locale" / "de-DE" / "LC_MESSAGES" / "messages.po"
    misplaced.parent.mkdir(parents=True)
    misplaced.write_text(textwrap.dedent(GERMAN).lstrip())
    [problem] = TemplateSet(read_template_files(root), root).compile_problems()
    assert (
        problem.path == str(misplaced)
        and "a catalog is locale/<language>/LC_MESSAGES/messages.po" in problem.message
    )


def test_a_file_checked_again_gives_its_problems_again_and_a_fixed_one_none(tmp_path: Path) -> None:
    """Checks of an unchanged file are kept between loads; they must follow its text."""
    root = directory(tmp_path, catalog='msgid "Hello %(name)s,"\nmsgstr Hallo\n')
    body = root / "greet" / "body.txt"
    body.write_text("Hi\n{{ _(name) }}\n")

    def problems() -> list[tuple[str, int]]:
        found = TemplateSet(read_template_files(root), root).compile_problems()
        return sorted((Path(p.path).name, p.line) for p in found)

    broken = [("body.txt", 2), ("messages.po", 2)]
    assert problems() == broken
    assert problems() == broken  # the same files, loaded again
    body.write_text(BODY)
    (root / "locale" / "de" / "LC_MESSAGES" / "messages.po").write_text(textwrap.dedent(GERMAN).lstrip())
    assert problems() == []
    assert render(root, "de")[0] == "Ihr Guthaben ist niedrig"


def test_a_locale_set_in_a_loop_or_block_is_the_one_its_words_are_translated_into(tmp_path: Path) -> None:
    # As Jinja calls any function that takes the context: with what the loop or block set in it
    # (a loop's own variable is not in the context, for Jinja's functions as for these).
    root = directory(tmp_path)
    (root / "greet" / "body.txt").write_text(
        '{{ _("Your balance is low") }}\n'
        '{% for n in [1] %}{% set locale = "de_DE" %}{{ _("Your balance is low") }}\n{% endfor %}'
        '{% block words %}{% set locale = "de_DE" %}{{ _("Your balance is low") }}\n{% endblock %}'
        '{% for locale in ["de_DE"] %}{{ _("Your balance is low") }}\n{% endfor %}'
    )
    _subject, text, _html = render(root, "en_US")
    assert text.splitlines() == [
        "Your balance is low",
        "Ihr Guthaben ist niedrig",
        "Ihr Guthaben ist niedrig",
        "Your balance is low",
    ]
