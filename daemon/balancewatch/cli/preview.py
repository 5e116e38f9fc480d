"""``balancewatch preview``: the template designer's live preview server, or screenshots of every
email at desktop and phone widths (``--screenshots DIR``). Nothing is sent or written to the
database."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import webbrowser
from pathlib import Path
from typing import Any

from balancewatch.cli.common import CommandError, Ctx
from balancewatch.tools.studio.catalogue import Catalogue
from balancewatch.tools.studio.live import AccountSource, Studio
from balancewatch.tools.studio.screenshots import CHROMIUM, ScreenshotError, take
from balancewatch.tools.studio.server import PreviewServer, bind

DEFAULT_LISTEN = "127.0.0.1:8025"

DESCRIPTION = """\
Serve every template rendered with every sample on a local web page: the
subject, headers and size, the HTML at desktop (600 px) and phone (390 px)
widths and the plain text. Saving a file in the templates directory updates
the open page. A template that fails shows its file:line. Nothing is sent.

  balancewatch preview --templates ./templates          then open the URL it prints
  balancewatch preview --listen 127.0.0.1:0 --open      a free port, opened in the browser
  balancewatch preview --screenshots shots/             PNGs of every email at both widths
"""


def register(commands: Any) -> None:
    cmd = commands.add_parser(
        "preview",
        help="serve a live preview of every template and sample for template designers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"where to serve (default: {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    cmd.add_argument(
        "--templates", metavar="DIR", help="the templates directory (default: the configured one)"
    )
    cmd.add_argument("--open", action="store_true", help="open the preview in the default web browser")
    cmd.add_argument(
        "--account",
        metavar="ID",
        help="also show each template's messages for this account, from the configured database (read only)",
    )
    cmd.add_argument(
        "--screenshots",
        metavar="DIR",
        help="instead of serving, write PNGs of each template's emails at 600 and 390 px into DIR "
        "(needs playwright and Chromium)",
    )
    cmd.add_argument(
        "--browser",
        metavar="PATH",
        default=CHROMIUM,
        help=f"Chromium for --screenshots (default: {CHROMIUM})",
    )
    cmd.set_defaults(handler=cmd_preview)


def cmd_preview(ctx: Ctx) -> int:
    args = ctx.args
    templates = Path(args.templates) if args.templates else None
    if args.screenshots:
        return _screenshots(
            ctx, Catalogue.load(ctx.settings, templates), Path(args.screenshots), args.browser
        )
    host, port = parse_listen(args.listen)
    local = _is_loopback(host)
    if args.account and not local:
        raise CommandError(
            f"--listen {args.listen}: --account shows customers' data; serve it on 127.0.0.1 only"
        )
    account = AccountSource(ctx.read_engine, args.account) if args.account else None
    studio = Studio(ctx.settings, templates, account=account)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise CommandError(
            f"--listen {args.listen}: cannot listen there ({exc.strerror or exc}); "
            "choose another with --listen HOST:PORT (port 0 picks a free one)"
        ) from None
    # uvicorn's start-up and shutdown chatter is not for a designer; its warnings are.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    server = PreviewServer(studio, local_only=local)
    if not local:
        ctx.warn(f"preview: --listen {args.listen} serves the preview to the network, without a login")
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/"
    ctx.out.write(f"preview: serving {url} (templates: {studio.templates_dir}); Ctrl-C stops\n")
    ctx.out.flush()
    studio.start()
    try:
        if args.open:
            webbrowser.open(url)
        server.run(sockets=[sock])
    finally:
        studio.stop()
        sock.close()
    return 0


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8025`` for IPv6) as a host and a port; CommandError otherwise."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise CommandError(
            f"--listen {value!r}: write HOST:PORT, e.g. 127.0.0.1:8025 (port 0 picks a free one)"
        )
    return host, int(port)


def _screenshots(ctx: Ctx, catalogue: Catalogue, directory: Path, browser: str) -> int:
    try:
        shots = take(catalogue, directory, browser)
    except ScreenshotError as exc:
        raise CommandError(str(exc)) from None
    failed = 0
    for shot in shots:
        if shot.problem:
            failed += 1
            ctx.warn(shot.problem)
        elif not shot.files:
            ctx.say(f"{shot.template} ({shot.kind}): no HTML part (body.html), nothing to show")
        else:
            ctx.say(" ".join(str(p) for p in shot.files))
    ctx.say(f"screenshots: {sum(len(s.files) for s in shots)} files in {directory}")
    return 1 if failed else 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
