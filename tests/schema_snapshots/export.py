"""Write the DDL that an older balancewatch's ``create_all`` ran, as SQL text, for the migration tests.

Usage (from the repository root)::

    python tests/schema_snapshots/export.py COMMIT VERSION

reads ``daemon/balancewatch/store/tables.py`` as it was at COMMIT (the last
commit whose ``SCHEMA_VERSION`` was VERSION), and writes
``vVERSION.sqlite.sql`` and ``vVERSION.postgresql.sql`` beside this file: every
CREATE TABLE and CREATE INDEX in ``create_all``'s order, then the
``schema_version`` row the hand-written upgrade recorded. Each module runs in a
process of its own, so two versions' models never meet in one SQLModel registry.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TABLES = "daemon/balancewatch/store/tables.py"

COMPILE = """
import importlib.util, sys
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import SQLModel

spec = importlib.util.spec_from_file_location("old_tables", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["old_tables"] = module
spec.loader.exec_module(module)
dialect = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[sys.argv[2]]
for table in SQLModel.metadata.sorted_tables:
    print(str(CreateTable(table).compile(dialect=dialect)).strip() + ";\\n")
    for index in sorted(table.indexes, key=lambda i: i.name):
        print(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";\\n")
"""


def export(commit: str, version: int) -> None:
    """Write both dialects' snapshots of the schema ``commit`` created, recorded as ``version``."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{TABLES}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = HERE / f".tables_v{version}.py"
    module.write_text(source, encoding="utf-8")
    try:
        for dialect in ("sqlite", "postgresql"):
            ddl = subprocess.run(
                [sys.executable, "-c", COMPILE, str(module), dialect],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            now = "CURRENT_TIMESTAMP"
            record = (
                "INSERT INTO balancewatch_meta (name, value, updated_at) "
                f"VALUES ('schema_version', '{version}', {now});\n"
            )
            header = f"-- What balancewatch {commit[:7]} created (SCHEMA_VERSION {version}), {dialect}.\n\n"
            (HERE / f"v{version}.{dialect}.sql").write_text(header + ddl + record, encoding="utf-8")
    finally:
        module.unlink()


if __name__ == "__main__":
    export(sys.argv[1], int(sys.argv[2]))
