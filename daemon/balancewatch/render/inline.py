"""CSS written once and inlined: the ``<style>`` block of an HTML email becomes ``style``
attributes on the elements it selects, so that mail clients that drop ``<style>`` (Gmail's
web client for some accounts, Outlook's Word engine, many webmails) still show the design.

The inliner is ``css-inline`` (Rust): remote and local stylesheets are never loaded (a
``<link rel=stylesheet>`` is dropped, never fetched: a template reaches no network and no
file), and at-rules (``@media (prefers-color-scheme: dark)``, ``@media (max-width: ...)``)
stay in a ``<style>`` tag for the clients that honour them, since they cannot be inlined.

The inliner runs in native code, which the render watchdog cannot interrupt, and its
recursion follows the document's nesting (a few thousand nested elements crash the whole
process). So before it runs, ``inline_css`` refuses what it cannot finish quickly and safely,
as the sandbox refuses ``"x" * 10**9`` before it is made: nesting deeper than MAX_DEPTH, and
more than MAX_MATCHING estimated selector-matching steps (each selector tried on each element,
plus the ancestors walked for selectors with combinators, plus every element again for
selectors that walk siblings or descendants: ``~``, ``:nth-*``, ``*-of-type``, ``:has()``). It also refuses
CSS the inliner would silently drop (unbalanced braces, a declaration with no ``:``), so a
designer's typo is a problem ``check`` reports rather than a style that quietly vanishes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from html import unescape

import css_inline

from balancewatch.render.stack import INLINER, run_inliner

MAX_DEPTH = 256  # elements nested in one another; real emails nest about 15
MAX_MATCHING = 200_000_000  # estimated steps (see _check_work): about a second of the inliner's time
PAIR = 8  # steps for one selector tried on one element

_RAW_OPEN = re.compile(r"<(!--|(?:style|script|title|textarea)\b)")  # text in them is not tags
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)")  # "<div/>" opens a div in HTML: no "/>" here
_STYLE_ATTRIBUTE = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_WALKING = re.compile(r"~|:nth-|-of-type|:has\(", re.IGNORECASE)
_COMBINATOR = re.compile(r"\S\s+[^\s>+~]|[>+~]")
# Elements that never hold others, and those an open one of the same name closes.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"})
_VOID |= {"param", "track", "wbr"}
_IMPLIED_END = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "option"})


class CssError(Exception):
    """CSS that cannot be inlined, or not within the limits: one line for the designer.
    ``snippet`` is text of the template source to find the file and line by (or "")."""

    def __init__(self, message: str, snippet: str = "") -> None:
        super().__init__(message)
        self.snippet = snippet


def inline_css(html: str) -> str:
    """``html`` with the rules of its ``<style>`` blocks written into the elements' ``style``
    attributes (an element's own ``style`` wins over a rule), at-rules kept in a ``<style>``
    tag, ``<link>`` stylesheets dropped unread. Raises CssError for CSS that is malformed or
    would take the inliner too long; never anything else."""
    markup, styles = _split(html)
    selectors = [s for block in styles for s in inlined_selectors(block)]
    elements = _check_work(markup, selectors)
    try:
        return run_inliner(html, elements)
    except (css_inline.InlineError, ValueError) as exc:
        raise _attribute_error(html, exc) from None


def inlined_selectors(css: str) -> tuple[str, ...]:
    """The selectors of the rules ``css`` has outside at-rules (those the inliner writes into
    elements). Raises CssError for unbalanced braces or a declaration without a ``:``.

    A layout's <style> block is the same in every email it renders: the answer is kept for
    the blocks seen last (small ones: the cache holds their text)."""
    if len(css) <= _CACHED_BLOCK:
        return _cached_selectors(css)
    return _selectors(css)


_CACHED_BLOCK = 65_536


@lru_cache(maxsize=64)
def _cached_selectors(css: str) -> tuple[str, ...]:
    return _selectors(css)


def _selectors(css: str) -> tuple[str, ...]:
    selectors: list[str] = []
    for prelude, body, nested in _rules(_COMMENT.sub(" ", css)):
        if prelude.startswith("@"):
            if body is not None and prelude[1:].lower().startswith(("media", "supports")):
                _selectors(body)  # checked, not counted: the inliner leaves it as it is
            continue
        if nested:
            raise CssError(f"the CSS rule {_short(prelude)} holds a {{ inside its {{ }}", prelude)
        for declaration in (body or "").split(";"):
            if declaration.strip() and ":" not in declaration:
                raise CssError(
                    f"the CSS rule {_short(prelude)} has {_short(declaration.strip())}, which is not "
                    "property: value",
                    declaration.strip(),
                )
        selectors.extend(s.strip() for s in prelude.split(","))
    return tuple(selectors)


_PUNCTUATION = re.compile(r"""[{};]|"[^"]*"?|'[^']*'?""")  # strings skipped whole


def _rules(css: str) -> Iterator[tuple[str, str | None, bool]]:
    """(prelude, body or None for ``@import ...;``, whether the body holds braces) per top-level
    rule. Raises CssError for a ``{`` never closed or a ``}`` never opened."""
    start = body_start = depth = 0
    nested = False
    for match in _PUNCTUATION.finditer(css):
        mark, at = match.group(), match.start()
        if mark == "{":
            depth += 1
            if depth == 1:
                body_start = at + 1
            nested = nested or depth > 1
        elif mark == "}":
            if depth == 0:
                before = css[start:at].strip() or css[:at].strip()
                raise CssError(
                    f"the CSS has a }} with no {{ before it (after {_short(before[-40:])})", before
                )
            depth -= 1
            if depth == 0:
                yield css[start : body_start - 1].strip(), css[body_start:at], nested
                start, nested = at + 1, False
        elif mark == ";" and depth == 0:
            prelude = css[start:at].strip()
            if prelude:
                yield prelude, None, False
            start = at + 1
    prelude = css[start : body_start - 1 if depth else len(css)].strip()
    if depth:
        raise CssError(f"the CSS rule {_short(prelude)} has a {{ that is never closed", prelude)
    if prelude:
        raise CssError(f"the CSS {_short(prelude)} has no {{ }} block", prelude)


def _check_work(markup: str, selectors: list[str]) -> int:
    """Raise CssError when ``markup`` (HTML without raw text: ``_split``) nests too deep, or
    matching ``selectors`` against it would take more than MAX_MATCHING estimated steps;
    else return how many elements it has.

    The estimate, calibrated on the inliner: a selector tried on an element is PAIR steps (about
    50 ns when it matches and its declarations are merged); a selector with a combinator also
    walks up to every ancestor of every element (one step, about 6 ns, each); one that walks
    siblings or descendants (~, :nth-*, *-of-type, :has()) up to every element for each."""
    elements, depth, ancestors = _shape(markup)
    if depth > MAX_DEPTH:
        raise CssError(
            f"the HTML nests elements more than {MAX_DEPTH} deep; refused before its CSS was inlined "
            "(is a closing tag missing in a loop?)"
        )
    count, combining, walking = _selector_kinds(tuple(selectors))
    steps = PAIR * elements * count + ancestors * combining + elements * elements * walking
    if steps > MAX_MATCHING:
        raise CssError(
            f"inlining {len(selectors):,} CSS selectors into {elements:,} elements would take about "
            f"{steps:,} steps; refused before it ran: at most {MAX_MATCHING:,} (fewer rules or "
            "elements, or no ~, :nth-*, *-of-type, :has() selectors in long emails)"
        )
    return elements


@lru_cache(maxsize=64)
def _selector_kinds(selectors: tuple[str, ...]) -> tuple[int, int, int]:
    """How many ``selectors`` there are, how many have a combinator, how many walk siblings or
    descendants; a layout's selectors are the same in every email it renders."""
    combining = sum(1 for s in selectors if _COMBINATOR.search(s))
    walking = sum(1 for s in selectors if _WALKING.search(s))
    return len(selectors), combining, walking


def _shape(markup: str) -> tuple[int, int, int]:
    """How many elements ``markup`` has, about how deep they nest and the sum of their depths, as
    an HTML parser would build them: an end tag closes what it closes, and a new p, li, td, tr
    and the like closes one left open just before it.

    The answer depends only on the sequence of tags, which the emails of one template mostly
    share (the text between the tags differs): it is kept for the sequences seen last."""
    tags = "".join(_TAG_TEXT.findall(markup))
    if len(tags) <= _CACHED_TAGS:
        return _cached_shape(tags)
    return _shape_of_tags(tags)


_TAG_TEXT = re.compile(r"</?[a-zA-Z][a-zA-Z0-9-]*")  # what _TAG matches, whole: "<td", "</td"
_CACHED_TAGS = 65_536


@lru_cache(maxsize=256)
def _cached_shape(tags: str) -> tuple[int, int, int]:
    return _shape_of_tags(tags)


def _shape_of_tags(tags: str) -> tuple[int, int, int]:
    stack: list[str] = []
    elements = deepest = ancestors = 0
    for closing, name in _TAG.findall(tags):
        tag = name.lower()
        if closing:
            if tag in stack:
                at = len(stack) - 1 - stack[::-1].index(tag)
                # Closed only through elements an end tag closes implicitly: a parser keeps an
                # element open behind others (<div><object></div>, <i><div></i>), and an
                # estimate too shallow would let the inliner's recursion overflow.
                if all(open_tag in _IMPLIED_END for open_tag in stack[at + 1 :]):
                    del stack[at:]
            continue
        elements += 1
        ancestors += len(stack)
        if tag in _VOID:
            continue
        if tag in _IMPLIED_END and stack and stack[-1] == tag:
            stack.pop()
        stack.append(tag)
        deepest = max(deepest, len(stack))
        if deepest > MAX_DEPTH:
            break  # refused anyway; a deeper scan of a runaway loop's output costs quadratic time
    return elements, deepest, ancestors


def _split(html: str) -> tuple[str, list[str]]:
    """``html`` without its comments, and the text of its style elements.

    The text of style, script, title and textarea elements stays in the markup: inside
    ``<svg>`` or ``<math>`` a parser reads it as markup, so its tags count towards the
    nesting (an overcount at worst). ``<!-->`` and ``<!--->`` are whole, empty comments.
    """
    lower, pieces, styles, at = html.lower(), [], [], 0
    while (opening := _RAW_OPEN.search(lower, at)) is not None:
        name = opening.group(1)
        if name == "!--":
            pieces.append(html[at : opening.start()])
            if lower.startswith(">", opening.end()) or lower.startswith("->", opening.end()):
                at = lower.index(">", opening.end()) + 1
                continue
            end = lower.find("-->", opening.end())
            at = len(html) if end < 0 else end + 3
            continue
        end = lower.find(f"</{name}", opening.end())
        end = len(html) if end < 0 else end
        if name == "style":
            content_start = html.find(">", opening.end(), end) + 1 or end
            styles.append(html[content_start:end])
        pieces.append(html[at:end])
        at = end
    pieces.append(html[at:])
    return " ".join(pieces), styles


def _attribute_error(html: str, exc: Exception) -> CssError:
    """The inliner's error, naming the ``style`` attribute it could not read when there is one."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for match in _STYLE_ATTRIBUTE.finditer(html):
        value = match.group(1) if match.group(1) is not None else match.group(2)
        if _unreadable(unescape(value)):
            return CssError(
                f"the CSS could not be inlined: the attribute style={_short(value, 60)} is not CSS "
                "declarations "
                f"({reason.lower()}); write property: value; ...",
                value,
            )
    return CssError(f"the CSS could not be inlined: {reason}")


def _unreadable(style: str) -> bool:
    probe = (
        f'<html><head><style>p{{margin:0}}</style></head><body><p style="{_attr(style)}"></p></body></html>'
    )
    try:
        INLINER.inline(probe)
    except (css_inline.InlineError, ValueError):
        return True
    return False


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;")


def _short(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
