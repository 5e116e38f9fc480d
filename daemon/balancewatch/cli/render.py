"""``balancewatch render TEMPLATE``: one template rendered offline, like ``amtool template render``.

Renders with a named sample (``--sample``; ``--list`` shows them) or, with
``--account ID``, with what the configured database holds for that account
(read only), and prints one part of the message a customer would receive:
its subject, text, HTML or the whole email (``eml``). Nothing is sent or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from balancewatch.cli.common import CommandError, Ctx, table
from balancewatch.tools.studio.accounts import AccountPreviewError, account_previews
from balancewatch.tools.studio.catalogue import Catalogue, Preview

PARTS = ("subject", "text", "html", "chat", "eml")

DESCRIPTION = """\
Render a template offline and print one part of the email it makes: the
subject, the plain text, the HTML or the whole message as the mail server
would receive it (eml). Samples cover every kind of message the template is
used for (see --list); --account renders with a real account's data from the
configured database, read only. Nothing is sent.

  balancewatch render low-balance                         the first sample's text
  balancewatch render low-balance --list                  the samples there are
  balancewatch render low-balance --sample exhausted --part html > exhausted.html
  balancewatch render usage-report --account acme --part eml > usage.eml
"""


def register(commands: Any) -> None:
    cmd = commands.add_parser(
        "render",
        help="render a template with a sample or an account's data and print a part of the email",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("template", metavar="TEMPLATE", help="a template's directory name, e.g. low-balance")
    cmd.add_argument("--sample", metavar="NAME", help="the sample to render with (default: the first)")
    cmd.add_argument("--kind", metavar="KIND", help="the kind of message, when the template has several uses")
    cmd.add_argument("--part", choices=PARTS, default="text", help="what to print (default: text)")
    cmd.add_argument(
        "--account",
        metavar="ID",
        help="render with this account's data from the configured database (read only)",
    )
    cmd.add_argument("--list", action="store_true", help="list the template's samples and exit")
    cmd.add_argument(
        "--templates", metavar="DIR", help="the templates directory (default: the configured one)"
    )
    cmd.set_defaults(handler=cmd_render)


def cmd_render(ctx: Ctx) -> int:
    args = ctx.args
    catalogue = Catalogue.load(ctx.settings, Path(args.templates) if args.templates else None)
    if args.account is not None:
        return _account(ctx, catalogue)
    if args.list:
        return _list(ctx, catalogue, args.template, args.kind)
    try:
        kind, sample = catalogue.find(args.template, args.sample, args.kind)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    return _print(ctx, catalogue.render(args.template, kind, sample), args.part)


def _account(ctx: Ctx, catalogue: Catalogue) -> int:
    """Render with the account's own data: ``--sample`` picks one of its messages by name."""
    args = ctx.args
    try:
        catalogue.find(args.template, kind=args.kind)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    try:
        previews = account_previews(catalogue, ctx.read_engine, args.template, args.account, ctx.now())
    except AccountPreviewError as exc:
        raise CommandError(str(exc)) from None
    if args.list:
        ctx.say(table([[p.sample, p.kind, p.title] for p in previews], ["MESSAGE", "KIND", "SHOWS"]))
        return 0
    chosen = [p for p in previews if args.sample in (None, p.sample)]
    if not chosen:
        have = ", ".join(p.sample for p in previews)
        raise CommandError(f"no message {args.sample!r} for account {args.account!r}; messages: {have}")
    return _print(ctx, chosen[0], args.part)


def _list(ctx: Ctx, catalogue: Catalogue, template: str, kind: str | None) -> int:
    try:
        catalogue.find(template, kind=kind)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    kinds = catalogue.uses[template] if kind is None else (kind,)
    rows = [[s.name, each, s.title] for each in kinds for s in catalogue.samples(each)]
    ctx.say(table(rows, ["SAMPLE", "KIND", "SHOWS"]))
    return 0


def _print(ctx: Ctx, preview: Preview, part: str) -> int:
    if preview.problem is not None or preview.rendered is None or preview.message is None:
        ctx.warn(str(preview.problem))
        return 1
    rendered = preview.rendered
    if part == "subject":
        ctx.say(rendered.subject)
    elif part == "text":
        ctx.out.write(rendered.text if rendered.text.endswith("\n") else rendered.text + "\n")
    elif part == "html":
        if rendered.html is None:
            raise CommandError(f"template {preview.template!r} has no HTML part (body.html)")
        ctx.out.write(rendered.html)
    elif part == "chat":
        # What a chat channel gets: chat.txt, or the subject when the template has none.
        ctx.say(rendered.chat if rendered.chat is not None else rendered.subject)
    else:
        ctx.out.write(preview.message.as_bytes().decode("utf-8"))
    return 0
