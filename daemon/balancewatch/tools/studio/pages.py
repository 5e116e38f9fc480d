"""The preview's HTML pages: the index of every template and sample, and one message's view.

Plain server-rendered HTML with its CSS inline and no external asset, so the preview works
offline. Everything a template or a sample supplies is escaped (Jinja autoescape). The email's
HTML is never put in these pages: it is shown in iframes whose ``sandbox`` withholds scripts
and the preview's origin, loaded from a URL whose response is sandboxed too (``RAW_POLICY``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup

from balancewatch.core.problems import Problem
from balancewatch.tools.studio.catalogue import Preview
from balancewatch.tools.studio.live import Snapshot

# Reloads the page once the catalogue it shows is no longer the latest. The first event says
# which generation is live, so a change made while the page was loading is not missed.
SCRIPT = """
new EventSource("/events").addEventListener("catalogue", function (event) {
  if (event.data !== document.documentElement.dataset.generation) { location.reload(); }
});
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
# The pages run only the script above; the email's HTML comes from 'self' into sandboxed frames.
PAGE_POLICY = (
    f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
    "connect-src 'self'; frame-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)
# The email's HTML, even when opened on its own: no script, an opaque origin, inline styles and
# the images a mail client would show.
RAW_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data: http: https:; "
    "font-src data:; frame-ancestors 'self'"
)

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: #1d2430; background: #f5f6f8; }
header { display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; align-items: baseline; padding: .6rem 1rem;
  background: #fff; border-bottom: 1px solid #d9dee5; }
header .app { font-weight: 600; }
main { padding: 0 1rem 2rem; }
a { color: #1b5fc1; }
h1 { font-size: 1.3rem; margin: 1rem 0 .4rem; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .3rem; }
h3 { font-size: .95rem; margin: .6rem 0 .2rem; color: #5b6675; }
code, pre { font: 13px/1.45 ui-monospace, monospace; }
.muted { color: #5b6675; }
.problems { border: 1px solid #b42318; background: #fef3f2; color: #7a1a12; padding: .6rem 1rem;
  margin: 1rem 0; border-radius: 6px; }
.problems pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: .3rem 0 0; }
ul.samples { margin: 0; padding-left: 1.2rem; }
nav.steps { display: flex; flex-wrap: wrap; gap: .3rem 1rem; margin: .6rem 0; }
table.headers { border-collapse: collapse; width: 100%; max-width: 60rem; table-layout: fixed; }
table.headers th { width: 8rem; text-align: left; font-weight: 500; color: #5b6675; }
table.headers th, table.headers td { padding: .15rem .5rem .15rem 0; vertical-align: top;
  overflow-wrap: anywhere; }
.parts { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; margin-top: 1rem; }
figure { margin: 0; max-width: 100%; }
figcaption { font-size: .85rem; color: #5b6675; margin-bottom: .2rem; }
iframe { display: block; height: 760px; max-width: 100%; border: 1px solid #d9dee5; background: #fff; }
iframe.desktop { width: 600px; }
iframe.phone { width: 390px; }
pre.text, pre.chat { width: 36rem; max-width: 100%; margin: 0; padding: .6rem; background: #fff;
  border: 1px solid #d9dee5; white-space: pre-wrap; overflow-wrap: anywhere; }
@media (max-width: 440px) {
  /* On a phone the phone frame takes the whole width: the email is seen at the width it gets. */
  .parts { margin: 1rem -1rem 0; }
  .parts figure { width: 100%; }
  .parts figcaption { padding: 0 1rem; }
  iframe { border-width: 1px 0; }
  iframe.phone { width: 100%; }
  pre.text, pre.chat { border-width: 1px 0; }
}
"""

_LAYOUT = """<!doctype html>
<html lang="en" data-generation="{{ generation }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · balancewatch preview</title>
<link rel="icon" href="data:,">
<style>{{ css }}</style>
<script>{{ script }}</script>
</head>
<body>
<header><span class="app">balancewatch preview</span><a href="/">all templates</a>
<span class="muted">{{ directory }}</span></header>
<main>
{% if stale %}<section class="problems" role="alert"><strong>The templates directory cannot be read;
showing it as it was.</strong><pre>{{ stale | join("\n") }}</pre></section>{% endif %}
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

_INDEX = """{% extends "layout" %}{% block main %}
<h1>Templates</h1>
<nav class="steps">{% for t in templates %}<a href="#{{ t.name }}">{{ t.name }}</a>{% endfor %}</nav>
{% if problems %}<section class="problems" role="alert"><strong>Templates with errors</strong>
<pre>{{ problems | join("\n") }}</pre></section>{% endif %}
{% if rule_problems %}<section class="problems" role="alert"><strong>Rule files with problems</strong>
(what each template is used for may be incomplete)<pre>{{ rule_problems | join("\n") }}</pre></section>
{% endif %}
{% for t in templates %}<section id="{{ t.name }}">
<h2>{{ t.name }}{% if t.broken %} <span class="muted">(has an error)</span>{% endif %}</h2>
{% for kind, samples in t.kinds %}<h3>{{ kind }}</h3>
<ul class="samples">{% for s in samples %}
<li><a href="{{ s.url }}">{{ s.title }}</a> <code class="muted">{{ s.name }}</code></li>{% endfor %}
</ul>{% endfor %}
{% if t.account %}<h3>account {{ t.account.account }}</h3>
{% if t.account.links %}<ul class="samples">{% for s in t.account.links %}
<li><a href="{{ s.url }}">{{ s.title }}</a> <code class="muted">{{ s.name }}</code></li>{% endfor %}
</ul>{% else %}<p class="muted">{{ t.account.why }}</p>{% endif %}{% endif %}
</section>{% endfor %}
{% endblock %}"""

_MESSAGE = """{% extends "layout" %}{% block main %}
<nav class="steps"><a href="/#{{ template }}">← index</a>
{% if previous %}<a href="{{ previous }}" rel="prev">← previous sample</a>{% endif %}
{% if next %}<a href="{{ next }}" rel="next">next sample →</a>{% endif %}</nav>
<p class="muted">{{ template }} · {{ kind }} · {{ sample }}: {{ sample_title }}</p>
{% if problem %}<section class="problems" role="alert"><strong>This template fails</strong>
<pre class="problem">{{ problem }}</pre></section>{% endif %}
{% if subject is not none %}<h1 class="subject">{{ subject }}</h1>{% endif %}
{% if headers %}<table class="headers">
{% for name, value in headers %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}
<tr><th>Size</th><td class="size">{{ size }}</td></tr>
</table>
<p><a href="{{ raw }}">HTML on its own</a> · <a href="{{ eml }}">download .eml</a></p>{% endif %}
{% if text is not none %}<div class="parts">
{% if has_html %}<figure><figcaption>desktop, 600 px</figcaption>
<iframe class="desktop" sandbox="" src="{{ raw }}" title="HTML part at 600 px"></iframe></figure>
<figure><figcaption>phone, 390 px</figcaption>
<iframe class="phone" sandbox="" src="{{ raw }}" title="HTML part at 390 px"></iframe></figure>
{% else %}<p class="muted">No HTML part (body.html): mail clients show the text.</p>{% endif %}
<figure><figcaption>text part</figcaption><pre class="text">{{ text }}</pre></figure>
<figure><figcaption>chat message (chat.txt{% if not has_chat %}: none, so the subject{% endif %})</figcaption>
<pre class="chat">{{ chat }}</pre></figure>
</div>{% endif %}
{% endblock %}"""

_NOT_FOUND = """{% extends "layout" %}{% block main %}
<h1>Not here</h1><p>{{ reason }}</p><p><a href="/">All templates</a></p>
{% endblock %}"""

_ENV = Environment(
    loader=DictLoader({"layout": _LAYOUT, "index": _INDEX, "message": _MESSAGE, "missing": _NOT_FOUND}),
    autoescape=True,
    undefined=StrictUndefined,
)


def message_path(template: str, kind: str, sample: str, view: str = "m") -> str:
    """The URL path of a message view (``m``), its HTML part (``raw``) or its email (``eml``)."""
    return f"/{view}/{quote(template, safe='')}/{quote(kind, safe='')}/{quote(sample, safe='')}"


ACCOUNT_KIND = "account"  # the kind in a message URL for ``preview --account``'s messages


@dataclass(frozen=True)
class Link:
    """A link to one message view: the sample's (or account message's) name, what it shows."""

    name: str
    title: str
    url: str


@dataclass(frozen=True)
class AccountLinks:
    """A template's messages for the ``--account`` account, or ``why`` there are none."""

    account: str
    links: list[Link]
    why: str | None = None


def index_page(snapshot: Snapshot, accounts: Mapping[str, AccountLinks] | None = None) -> str:
    """Every template with each of its kinds and samples (and, with ``accounts``, its messages for
    a real account), and the problems of the files."""
    catalogue = snapshot.catalogue
    broken = {_template_of(p, catalogue.templates.directory) for p in catalogue.problems}
    templates = [
        {
            "name": name,
            "broken": name in broken,
            "account": (accounts or {}).get(name),
            "kinds": [
                (
                    kind,
                    [
                        Link(s.name, s.title, message_path(name, kind, s.name))
                        for s in catalogue.samples(kind)
                    ],
                )
                for kind in catalogue.uses[name]
            ],
        }
        for name in catalogue.names
    ]
    return _page(
        "index",
        snapshot,
        title="Templates",
        templates=templates,
        problems=[str(p) for p in catalogue.problems],
        rule_problems=[str(p) for p in catalogue.rule_problems],
    )


def message_page(snapshot: Snapshot, preview: Preview) -> str:
    """One (template, kind, sample): the message's headers, size, HTML at both widths and text;
    or the problem that stops the template, in words a designer acts on (file:line)."""
    entries = [(t, k, s.name) for t, k, s in snapshot.catalogue.entries()]
    here = (preview.template, preview.kind, preview.sample)
    at = entries.index(here) if here in entries else -1
    previous = message_path(*entries[at - 1]) if at > 0 else None
    following = message_path(*entries[at + 1]) if 0 <= at < len(entries) - 1 else None
    rendered, message = preview.rendered, preview.message
    return _page(
        "message",
        snapshot,
        title=f"{preview.template} · {preview.sample}",
        template=preview.template,
        kind=preview.kind,
        sample=preview.sample,
        sample_title=preview.title,
        previous=previous,
        next=following,
        problem=str(preview.problem) if preview.problem is not None else None,
        subject=rendered.subject if rendered is not None else None,
        text=rendered.text if rendered is not None else None,
        chat=(rendered.chat or rendered.subject) if rendered is not None else None,
        has_chat=rendered is not None and rendered.chat is not None,
        has_html=rendered is not None and rendered.html is not None,
        headers=[(k, str(v)) for k, v in message.items()] if message is not None else [],
        size=kilobytes(preview.size),
        raw=message_path(*here, view="raw"),
        eml=message_path(*here, view="eml"),
    )


def missing_page(snapshot: Snapshot, reason: str) -> str:
    """A page for a template, kind or sample there is not (any more: it may have been renamed)."""
    return _page("missing", snapshot, title="Not here", reason=reason)


def kilobytes(size: int) -> str:
    """``5498`` -> ``5.5 kB`` (1 kB = 1,000 bytes, as render.max_size counts)."""
    return f"{size / 1000:.1f} kB"


def _page(name: str, snapshot: Snapshot, **values: object) -> str:
    return _ENV.get_template(name).render(
        css=Markup(CSS),
        script=Markup(SCRIPT),
        generation=snapshot.generation,
        directory=str(snapshot.catalogue.templates.directory),
        stale=[str(p) for p in snapshot.stale],
        **values,
    )


def _template_of(problem: Problem, directory: Path | str) -> str:
    """The template a problem's file belongs to ('' for a shared piece such as _base.html)."""
    try:
        parts = Path(problem.path).relative_to(directory).parts
    except ValueError:
        return ""
    return parts[0] if len(parts) > 1 else ""
