"""Emails in the account's language: Jinja's i18n extension with Babel message catalogs.

Templates mark their words with ``{% trans %}…{% endtrans %}`` (and ``_()``);
``pybabel extract`` collects them (``templates/babel.cfg``), ``pybabel init``
and ``update`` keep one catalog per language in the templates directory:
``locale/<language>/LC_MESSAGES/messages.po``. The ``.po`` files are read with
the templates (no ``pybabel compile`` step: they are compiled in memory when
the set loads, so a reload picks up a translation like any other edit).

The context's ``locale`` (the account's, as every email context has it) picks
the catalog: the exact locale (``de_AT``), else its language (``de``), else
none, and the words stay as written in the template (English). A message a
catalog leaves untranslated (or marks fuzzy) stays as written too.

A catalog is a designer's file, so it is checked like a template: syntax errors,
and translations whose ``%(name)s`` placeholders differ from the original's or
carry a width or precision (``%(n)999999999d`` would allocate gigabytes outside
the sandbox's checks), are problems with the file and line, and the set does
not load.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from gettext import NullTranslations
from typing import Any

from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.support import Translations
from jinja2 import Environment, TemplateSyntaxError, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SecurityError
from markupsafe import Markup

from balancewatch.core.memo import Memo
from balancewatch.core.problems import Problem

CATALOG = re.compile(r"^locale/(?P<language>[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,4})*)/LC_MESSAGES/messages\.po$")
# %(name)s with its flags, width and precision; %% is not a placeholder.
_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]*)\))?(?P<spec>[-#0 +]*\d*(?:\.\d*)?)[a-zA-Z%]")
_NULL = NullTranslations()
_TAG = re.compile(r"<[^>]*>")
MAX_PLACEHOLDERS = 32  # in one message: real ones have a handful
# The lines a catalog may hold: babel's reader guesses at others (``msgstr Hallo`` reads as
# "all"), so they are refused here first, with their line.
_STRING = r'"(?:\\.|[^"\\])*"'
_PO_LINE = re.compile(
    rf"^\s*(?:#.*|(?:msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?)\s+{_STRING}|{_STRING})?\s*$"
)


@dataclass(frozen=True)
class Catalogs:
    """The translations of one template set, by locale as the catalogs' directories name it."""

    by_locale: Mapping[str, NullTranslations] = field(default_factory=dict)
    # locale as written -> its translations: a render asks dozens of times for the same locale.
    _chosen: dict[str, NullTranslations] = field(default_factory=dict, compare=False, repr=False)

    def for_locale(self, locale: str | None) -> NullTranslations:
        """The translations for ``locale`` (``de_DE``, ``de-de`` or ``de``): exact, else its
        language's, else none (the template's own words)."""
        if not locale or not self.by_locale:
            return _NULL
        chosen = self._chosen.get(locale)
        if chosen is None:
            chosen = self._chosen[locale] = self._choose(locale)
        return chosen

    def _choose(self, locale: str) -> NullTranslations:
        lowered = {name.lower(): translations for name, translations in self.by_locale.items()}
        wanted = locale.replace("-", "_").lower()
        return lowered.get(wanted) or lowered.get(wanted.split("_")[0]) or _NULL

    @property
    def languages(self) -> list[str]:
        return sorted(self.by_locale)


# A catalog's checks and compiled form depend on its text alone: a reload redoes neither for a
# catalog that did not change.
_CATALOGS: Memo[tuple[str, str], tuple[NullTranslations | None, tuple[Problem, ...]]] = Memo(64)


def load_catalogs(files: Mapping[str, str], directory: str) -> tuple[Catalogs, list[Problem]]:
    """The catalogs among ``files`` (a templates directory's text files by relative path), and
    the problems of those that cannot be used (paths shown under ``directory``)."""
    by_locale: dict[str, NullTranslations] = {}
    problems: list[Problem] = []
    for name, text in sorted(files.items()):
        found = CATALOG.match(name)
        if found is None:
            if name.endswith(".po"):
                problems.append(
                    Problem(
                        f"{directory}/{name}",
                        0,
                        "",
                        "not read: a catalog is locale/<language>/LC_MESSAGES/messages.po",
                    )
                )
            continue
        path = f"{directory}/{name}"
        translations, found_problems = _CATALOGS.get((path, text), partial(_catalog, path, text))
        problems += found_problems
        if translations is not None:
            by_locale[found["language"]] = translations
    return Catalogs(by_locale), problems


def _catalog(path: str, text: str) -> tuple[NullTranslations | None, tuple[Problem, ...]]:
    """The catalog ``text`` (of file ``path``) compiled, or None, and its problems."""
    bad = next((n for n, line in enumerate(text.splitlines(), 1) if not _PO_LINE.match(line)), None)
    if bad is not None:
        return None, (
            Problem(path, bad, "", 'not a valid message catalog line; write msgid "..." / msgstr "..."'),
        )
    try:
        catalog = read_po(io.StringIO(text), locale=None, abort_invalid=True)
    except PoFileError as exc:
        return None, (Problem(path, exc.lineno, "", f"not a valid message catalog: {exc}"),)
    except Exception as exc:  # babel's parser raises what it meets (ValueError, UnknownLocaleError)
        return None, (Problem(path, 0, "", f"not a valid message catalog: {exc}"),)
    # Fuzzy entries are not used (they render the template's own words), so a wording
    # change that `pybabel update` marks fuzzy never blocks a set from loading.
    used = [m for m in catalog if m.id and m.string and not m.fuzzy]
    found = [_placeholder_problem(path, m) or _markup_problem(path, m) for m in used]
    problems = tuple(p for p in found if p is not None)
    try:
        catalog.charset = "utf-8"  # the text was read as UTF-8 already, whatever the header says
        return _compiled(catalog), problems
    except (ValueError, LookupError, UnicodeError) as exc:  # e.g. a Plural-Forms that does not parse
        return None, (*problems, Problem(path, 1, "", f"its header cannot be used: {exc}"))


def install(env: Environment, catalogs: Catalogs) -> None:
    """Give ``env`` (built with the ``jinja2.ext.i18n`` extension) gettext functions that
    translate into the rendering context's ``locale``.

    Each is what Jinja's newstyle gettext does (the translation trusted as markup where the
    template autoescapes, its ``%(name)s`` filled with the values, escaped there), in one call
    from the template instead of three through the sandbox: an email asks for dozens of texts,
    and those layers were a third of its render. A text checked once for a locale is kept."""
    env.install_gettext_callables(  # type: ignore[attr-defined]  # sets up {% trans %} for newstyle
        gettext=str, ngettext=str, pgettext=str, npgettext=str, newstyle=True
    )
    kept = _Kept(catalogs)

    # Functions, not bound methods: the sandbox checks the arguments of every method call.
    @pass_context
    def gettext(context: Context, string: str, /, **variables: Any) -> str:
        return _filled(context, kept.text(context, "", string), variables)

    @pass_context
    def pgettext(context: Context, message_context: str, string: str, /, **variables: Any) -> str:
        variables.setdefault("context", message_context)
        return _filled(context, kept.text(context, message_context, string), variables)

    @pass_context
    def ngettext(context: Context, singular: str, plural: str, num: int, /, **variables: Any) -> str:
        variables.setdefault("num", num)
        found = catalogs.for_locale(context.get("locale")).ngettext(singular, plural, num)
        return _filled(context, _formattable(found), variables)

    @pass_context
    def npgettext(
        context: Context, message_context: str, singular: str, plural: str, num: int, /, **variables: Any
    ) -> str:
        variables.setdefault("context", message_context)
        variables.setdefault("num", num)
        found = catalogs.for_locale(context.get("locale")).npgettext(message_context, singular, plural, num)
        return _filled(context, _formattable(found), variables)

    env.globals.update(_=gettext, gettext=gettext, pgettext=pgettext, ngettext=ngettext, npgettext=npgettext)


TRANSLATORS = ("_", "gettext", "pgettext", "ngettext", "npgettext")  # the globals ``install`` sets


class _Kept:
    """Texts translated for a locale and checked (``_formattable``), kept: an email asks for the
    same few dozen each time."""

    MAX_KEPT = 10_000  # texts are the templates' literals; a bound all the same

    def __init__(self, catalogs: Catalogs) -> None:
        self._catalogs = catalogs
        self._kept: dict[tuple[int, str, str], str] = {}

    def text(self, context: Context, message_context: str, string: str) -> str:
        translations = self._catalogs.for_locale(context.get("locale"))
        key = (id(translations), message_context, string)
        text = self._kept.get(key)
        if text is None:
            found = (
                translations.pgettext(message_context, string)
                if message_context
                else translations.gettext(string)
            )
            text = _formattable(found)
            if len(self._kept) >= self.MAX_KEPT:
                self._kept.clear()
            self._kept[key] = text
        return text


def _filled(context: Context, text: str, variables: dict[str, Any]) -> str:
    """Jinja's newstyle formatting: always a format string, markup where the template escapes."""
    return (Markup(text) if context.eval_ctx.autoescape else text) % variables


_GETTEXT = {"_": 1, "gettext": 1, "ngettext": 2, "pgettext": 2, "npgettext": 3}  # name -> literal args


def literal_problems(env: Environment, name: str, source: str, path: str) -> list[Problem]:
    """A problem for each ``_()``/``gettext()`` call in template ``name`` whose text is not a
    literal: the text given is trusted as markup in HTML (it is a translator's string), so a
    value from the data there would reach the email unescaped."""
    advice = 'translates literal text only: write _("... %(name)s ...", name=value)'
    found = _nonliteral(env, name, source)
    return [Problem(path, line, "", f"{function}() {advice}") for line, function in found]


_NONLITERAL: Memo[tuple[str, str], tuple[tuple[int, str], ...]] = Memo(4096)


def _nonliteral(env: Environment, name: str, source: str) -> tuple[tuple[int, str], ...]:
    """(line, function) of each gettext call in ``source`` given text that is not a literal.

    Every reload checks the whole directory and parsing is most of its time, so an unchanged
    file is parsed once per process. The memo keys on the file alone: every environment here
    parses with the same syntax (``sandbox.environment`` builds them all)."""
    return _NONLITERAL.get((name, source), lambda: _nonliteral_of(env, name, source))


def _nonliteral_of(env: Environment, name: str, source: str) -> tuple[tuple[int, str], ...]:
    try:
        tree = env.parse(source, name)
    except TemplateSyntaxError:
        return ()  # reported as a syntax error
    found = []
    for call in tree.find_all(nodes.Call):
        function = call.node.name if isinstance(call.node, nodes.Name) else ""
        if any(not isinstance(arg, nodes.Const) for arg in call.args[: _GETTEXT.get(function, 0)]):
            found.append((call.lineno, function))
    return tuple(found)


def _formattable(text: str) -> str:
    """``text`` if Jinja may format it with the render's values, which it does outside the
    sandbox's size checks: no placeholder with a width or precision (``%(n)999999999d``), and
    not so many that the values repeated could outgrow the render's size limit."""
    found = list(_PLACEHOLDER.finditer(text))
    sized = next((m.group(0) for m in found if m.group("spec")), None)
    if sized is not None:
        raise SecurityError(f"{sized!r} in a translated text: write placeholders as %(name)s")
    if len(found) > MAX_PLACEHOLDERS:
        raise SecurityError(
            f"a translated text has {len(found)} placeholders; at most {MAX_PLACEHOLDERS} in one message"
        )
    return text


def _compiled(catalog: Catalog) -> Translations:
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer)


def _placeholder_problem(path: str, message: Message) -> Problem | None:
    """A problem when a translation's placeholders are not the original's, or are sized."""
    originals = message.id if isinstance(message.id, (list, tuple)) else (message.id,)
    translations = message.string if isinstance(message.string, (list, tuple)) else (message.string,)
    wanted = set().union(*(_names(o) for o in originals if o))
    for text in (t for t in translations if t):
        sized = [m.group(0) for m in _PLACEHOLDER.finditer(text) if m.group("spec")]
        if sized:
            return Problem(
                path,
                message.lineno or 0,
                "",
                f"{sized[0]!r}: write placeholders as %(name)s, without a width or precision",
            )
        if _names(text) != wanted:
            have = ", ".join(sorted(_names(text))) or "none"
            need = ", ".join(sorted(wanted)) or "none"
            return Problem(
                path,
                message.lineno or 0,
                "",
                f"the translation of {originals[0]!r} has the placeholders {have}; the original has {need}",
            )
    return None


def _markup_problem(path: str, message: Message) -> Problem | None:
    """A problem when a translation holds markup its original does not: a catalog could
    otherwise add links or images to the HTML of every email in its language."""
    originals = message.id if isinstance(message.id, (list, tuple)) else (message.id,)
    translations = message.string if isinstance(message.string, (list, tuple)) else (message.string,)
    allowed = set().union(*(_tags(o) for o in originals if o))
    for text in (t for t in translations if t):
        extra = sorted(_tags(text) - allowed)
        if extra:
            return Problem(
                path,
                message.lineno or 0,
                "",
                f"the translation of {originals[0]!r} adds the markup {extra[0]!r}; "
                "a translation may use only the tags of its original",
            )
    return None


def _tags(text: str) -> set[str]:
    return {" ".join(m.group(0).split()) for m in _TAG.finditer(text)}


def _names(text: str) -> set[str]:
    return {m.group("name") or "" for m in _PLACEHOLDER.finditer(text) if not m.group(0).endswith("%")}
