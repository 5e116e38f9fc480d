"""``balancewatch systemd-unit``: the shipped unit with this installation's paths filled in.

The unit as shipped names the README's layout (``/opt/balancewatch``,
``/etc/balancewatch/config.yaml``). The command rewrites exactly the lines that
depend on where balancewatch is installed: ``ExecStart=`` and ``ExecReload=``
(the ``balancewatch`` beside the Python running the command),
``Environment=BALANCEWATCH_CONFIG=`` and ``Documentation=`` (the docs page
installed with the wheel). Everything else, the hardening included, is printed
unchanged.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from balancewatch.cli.common import CommandError, Ctx
from balancewatch.core import shipped

SHIPPED_EXECUTABLE = "/opt/balancewatch/bin/balancewatch"
SHIPPED_CONFIG = "/etc/balancewatch/config.yaml"
CONFIG_VARIABLE = "BALANCEWATCH_CONFIG"

# Characters systemd would take as the end of a word or line, or that no path should hold.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnitTemplateError(Exception):
    """The shipped unit lacks a line the command fills in (the unit and this module drifted)."""


def register(commands: Any) -> None:
    unit = commands.add_parser(
        "systemd-unit",
        help="print the systemd unit for this installation",
        description="Print the shipped systemd unit with ExecStart=, ExecReload=, the config path and "
        "Documentation= pointing at this installation. Install it with: "
        "balancewatch systemd-unit > /etc/systemd/system/balancewatch.service",
    )
    unit.add_argument(
        "--config",
        dest="unit_config",
        metavar="PATH",
        help=f"the config file the service reads, as {CONFIG_VARIABLE} (default: the global --config, "
        f"else {SHIPPED_CONFIG})",
    )
    unit.set_defaults(handler=cmd_systemd_unit)


def cmd_systemd_unit(ctx: Ctx) -> int:
    config = Path(_config_argument(ctx.args)).absolute()
    unit = render_unit(
        shipped.systemd_unit().read_text(),
        executable=installed_executable(),
        config=config,
        doc=shipped.systemd_doc(),
    )
    ctx.out.write(unit)
    if not config.is_file():
        ctx.warn(f"note: {config} does not exist yet; the service will not start until it does")
    return 0


def _config_argument(args: argparse.Namespace) -> str:
    return str(getattr(args, "unit_config", None) or args.config or SHIPPED_CONFIG)


def installed_executable(python: str | None = None, argv0: str | None = None) -> Path:
    """The ``balancewatch`` script of the environment running this command.

    Looked for beside ``sys.executable`` first (not resolved: a virtual
    environment's python is a symlink to the base interpreter, whose
    directory holds no balancewatch), then as ``sys.argv[0]``. Raises
    CommandError when neither is a file named balancewatch.
    """
    beside = Path(python or sys.executable).absolute().parent / "balancewatch"
    if beside.is_file():
        return beside
    script = Path(argv0 or sys.argv[0])
    if script.name == "balancewatch" and script.is_file():
        return script.absolute()
    raise CommandError(
        f"no balancewatch script beside {python or sys.executable}: run this command as the installed "
        "balancewatch (e.g. /opt/balancewatch/bin/balancewatch systemd-unit)"
    )


def render_unit(template: str, executable: Path, config: Path, doc: Path | None) -> str:
    """``template`` (the shipped unit) with the installation's paths in its four path lines.

    ``doc`` None drops ``Documentation=`` rather than naming a page that is not
    there. Raises CommandError for a path systemd cannot hold (a control
    character), UnitTemplateError when ``template`` lacks one of the lines.
    """
    for path in (executable, config, *([doc] if doc else [])):
        if _CONTROL.search(str(path)):
            raise CommandError(f"{str(path)!r}: a path with a control character cannot go in a unit file")
    command = _quote(_escape_specifiers(str(executable)).replace("$", "$$"))
    rewrites = {
        f"ExecStart={SHIPPED_EXECUTABLE} ": f"ExecStart={command} ",
        f"ExecReload={SHIPPED_EXECUTABLE} ": f"ExecReload={command} ",
        f"Environment={CONFIG_VARIABLE}=": "Environment="
        + _quote(_escape_specifiers(f"{CONFIG_VARIABLE}={config}"))
        + "\n",
        "Documentation=": f"Documentation={_escape_specifiers(doc.as_uri())}\n" if doc else "",
    }
    out: list[str] = []
    seen: set[str] = set()
    for line in template.splitlines(keepends=True):
        prefix = next((p for p in rewrites if line.startswith(p)), None)
        if prefix is None:
            out.append(line)
            continue
        seen.add(prefix)
        replaced = rewrites[prefix]
        out.append(replaced + line[len(prefix) :] if prefix.endswith(" ") else replaced)
    missing = [p.rstrip() for p in rewrites if p not in seen]
    if missing:
        raise UnitTemplateError(f"the shipped unit has no line starting {', '.join(missing)}")
    return "".join(out)


def _escape_specifiers(value: str) -> str:
    """systemd expands ``%x`` specifiers in these settings; a literal ``%`` is written ``%%``."""
    return value.replace("%", "%%")


def _quote(word: str) -> str:
    """One word as systemd reads it: bare when it can be, else double-quoted with C escapes."""
    if word and not re.search(r'[\s"\'\\;]', word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
