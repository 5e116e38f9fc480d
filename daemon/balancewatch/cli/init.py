"""``init DIR``: a configuration directory to start from — the commented example config, the shipped
rules and the shipped templates, with the config pointing at the copies beside it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancewatch.cli.common import CommandError, Ctx
from balancewatch.core import shipped

CONFIG = "config.yaml"
# The directories the copied config names, relative to it (a relative path is read from the file's own
# directory, so the directory can be moved as a whole).
RULES, TEMPLATES = "rules", "templates"
# Where the rule files' ``$schema=../docs/rules.schema.json`` comment points, for editors that read it.
SCHEMA = Path("docs", "rules.schema.json")


@dataclass(frozen=True)
class Planned:
    """One file to write: its path relative to DIR and its contents."""

    relative: Path
    content: bytes


def register(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="write a config.yaml, the shipped rules and templates to DIR, to start from",
        description="Writes DIR/config.yaml (the commented example configuration, with rules_dir and "
        "templates_dir naming the copies beside it), DIR/rules/ and DIR/templates/. Refuses to "
        "overwrite a file that exists unless --force; other files in DIR are left alone.",
    )
    init.add_argument("dir", metavar="DIR", type=Path, help="the directory to write (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    init.set_defaults(handler=cmd_init)


def cmd_init(ctx: Ctx) -> int:
    target: Path = ctx.args.dir
    planned = list(plan())
    if not ctx.args.force:
        existing = next((target / p.relative for p in planned if (target / p.relative).exists()), None)
        if existing is not None:
            raise CommandError(
                f"{existing} exists; nothing written (--force overwrites the files init writes)"
            )
    write(target, planned)
    config = target / CONFIG
    ctx.say(f"wrote {config}")
    for sub in (RULES, TEMPLATES):
        count = sum(1 for p in planned if p.relative.parts[0] == sub)
        ctx.say(f"wrote {target / sub}/ ({count} files)")
    ctx.say()
    ctx.say("next:")
    ctx.say(f"  1. edit {config}: database.url, smtp and delivery.from at least")
    ctx.say(f"  2. balancewatch --config {config} check")
    ctx.say(f"  3. balancewatch --config {config} run    (or under systemd: balancewatch systemd-unit)")
    return 0


def plan() -> Iterator[Planned]:
    """Every file ``init`` writes, config first: the config, the rules, the templates, the schema."""
    yield Planned(Path(CONFIG), config_text(shipped.example_config().read_text(encoding="utf-8")).encode())
    for sub, source in ((RULES, shipped.rules_dir()), (TEMPLATES, shipped.templates_dir())):
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and not _skipped(relative):
                yield Planned(Path(sub, relative), path.read_bytes())
    schema = shipped.rules_dir().parent / SCHEMA
    if schema.is_file():
        yield Planned(SCHEMA, schema.read_bytes())


def config_text(example: str) -> str:
    """The example config with ``rules_dir`` and ``templates_dir`` naming the copies beside it.

    Raises CommandError when the example no longer has those keys at the top
    level: writing a config that points elsewhere would be worse than nothing.
    """
    for key, value in (("rules_dir", RULES), ("templates_dir", TEMPLATES)):
        example, found = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", example, count=1)
        if not found:
            raise CommandError(f"{shipped.example_config()}: no top-level {key}: to point at {value}/")
    return example


def write(target: Path, planned: list[Planned]) -> None:
    """Write every planned file under ``target``; a failure is one line naming the path."""
    for p in planned:
        path = target / p.relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(p.content)
        except OSError as exc:
            raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _skipped(relative: Path) -> bool:
    """Byte code and hidden files (editor swap files, .gitkeep) are not part of what is shipped."""
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
