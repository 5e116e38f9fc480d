"""Schema migrations: every shipped revision, databases the hand-written upgrade made, `db` commands.

Each test gets empty databases of its own (a SQLite file, or a PostgreSQL
schema) and compares schemas as the database reports them: tables, columns
(type, nullability, default), primary keys, indexes (columns, uniqueness,
partial WHERE), unique constraints and foreign keys. The SQL under
tests/schema_snapshots/ is what older balancewatch versions' ``create_all``
ran (written by tests/schema_snapshots/export.py from the git history).
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from balancewatch.cli import main
from balancewatch.cli.common import CommandError, Ctx
from balancewatch.store.db import HEAD, alembic_config, make_engine, schema_status, upgrade
from balancewatch.store.tables import SCHEMA_VERSION
from tests.conftest import _schema_url, postgres_engine

SNAPSHOTS = Path(__file__).resolve().parent / "schema_snapshots"
# The trigger db upgrade installs on PostgreSQL is tests/test_push.py's: here, the schema alone.
ENVIRON = {"BALANCEWATCH_LOG__LEVEL": "warning", "BALANCEWATCH_DATABASE__LISTEN": "off"}

Blank = Callable[[], tuple[str, Engine]]


@pytest.fixture
def blank(backend: str, tmp_path: Path) -> Iterator[Blank]:
    """Makes empty databases on the parametrized backend: returns (url, engine) for each new one."""
    made: list[Iterator[Engine]] = []
    engines: list[Engine] = []

    def make() -> tuple[str, Engine]:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'db-{len(engines)}.db'}"
            engines.append(make_engine(url))
            return url, engines[-1]
        schema = "t_" + uuid.uuid4().hex[:12]
        session = postgres_engine(schema)
        made.append(session)
        return _schema_url(schema), next(session)

    yield make
    for engine in engines:
        engine.dispose()
    for session in made:
        for _ in session:  # runs the cleanup after its yield: drops the schema
            pass


def migrate_to(engine: Engine, revision: str) -> None:
    """Run the shipped migrations alone (no repair, no create_all) up to ``revision``."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def load_snapshot(engine: Engine, version: int) -> None:
    """Build the schema balancewatch version ``version``'s hand-written upgrade made, with its version row."""
    sql = (SNAPSHOTS / f"v{version}.{engine.dialect.name}.sql").read_text(encoding="utf-8")
    lines = [line for line in sql.splitlines() if not line.startswith("--")]
    with engine.begin() as conn:
        for statement in "\n".join(lines).split(";\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def shape(engine: Engine) -> dict[str, Any]:
    """The schema as the database reports it, every table but Alembic's own; column order left out."""
    inspector = inspect(engine)
    out = {}
    for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        columns = {
            c["name"]: (str(c["type"]), c["nullable"], _default(c.get("default")))
            for c in inspector.get_columns(name)
        }
        indexes = sorted(
            (
                i["name"] or "",
                tuple(i["column_names"]),
                bool(i["unique"]),
                tuple(sorted((k, str(v)) for k, v in (i.get("dialect_options") or {}).items())),
            )
            for i in inspector.get_indexes(name)
        )
        uniques = sorted(
            (u["name"] or "", tuple(u["column_names"])) for u in inspector.get_unique_constraints(name)
        )
        foreign = sorted(
            (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
            for f in inspector.get_foreign_keys(name)
        )
        primary = tuple(inspector.get_pk_constraint(name)["constrained_columns"])
        out[name] = {
            "columns": columns,
            "pk": primary,
            "indexes": indexes,
            "uniques": uniques,
            "fks": foreign,
        }
    return out


def _default(value: Any) -> str | None:
    # PostgreSQL spells a JSON default '[]'::json; SQLite '[]'. Both mean the same; compare the text.
    return None if value is None else str(value).split("::")[0]


def revision_of(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def fresh_head(blank: Blank) -> dict[str, Any]:
    """The shape of an empty database after upgrade()."""
    _, engine = blank()
    upgrade(engine)
    return shape(engine)


# --- rows an older schema holds, and what they must look like at head -------------------------------

ACCOUNT = (
    "INSERT INTO account (id, name, owner_email, billing, labels, enabled, created_at) VALUES "
    "('acme', 'Acme', 'owner@acme.example', 'prepaid', '{\"tier\": \"gold\"}', true, CURRENT_TIMESTAMP)"
)
BALANCE = "INSERT INTO balance VALUES ('acme', 'USD', 12345, CURRENT_TIMESTAMP)"
LEDGER = (
    "INSERT INTO ledger_entry (account_id, currency, amount, kind, occurred_at, reference) "
    "VALUES ('acme', 'USD', -1250, 'usage', CURRENT_TIMESTAMP, 'ref-1')"
)
OUTBOX = (
    "INSERT INTO outbox (idem_key, message_id, kind, sender, recipients, subject, text, status, attempts, "
    "next_attempt_at, created_at) VALUES ('alert/r/acme/USD/100/1/0', '<m@x>', 'alert', 's', "
    "'[\"owner@acme.example\"]', 'Low balance', 't', 'sent', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)
PREFERENCE_V1 = (
    "INSERT INTO owner_preference (account_id, currency, thresholds, recipients, remind, enabled, "
    "updated_at) VALUES "
    "('acme', 'USD', '[5000, 1000]', '[\"ops@acme.example\"]', '24h', true, CURRENT_TIMESTAMP)"
)
PREFERENCE_V3 = (
    "INSERT INTO owner_preference (account_id, currency, threshold_1, threshold_2, recipients, remind, "
    "enabled, updated_at) VALUES ('acme', 'USD', 5000, 1000, '[\"ops@acme.example\"]', true, true, "
    "CURRENT_TIMESTAMP)"
)


def put_rows(engine: Engine, version: int) -> None:
    with engine.begin() as conn:
        for statement in (ACCOUNT, BALANCE, LEDGER, OUTBOX, PREFERENCE_V1 if version < 3 else PREFERENCE_V3):
            conn.exec_driver_sql(statement)


def assert_rows_kept(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, labels FROM account")).all() == [
            ("Acme", _json(engine, {"tier": "gold"}))
        ]
        assert conn.execute(text("SELECT amount FROM balance")).scalars().all() == [12345]
        assert conn.execute(text("SELECT amount, reference FROM ledger_entry")).all() == [(-1250, "ref-1")]
        subject, attachments, deliveries, channel = conn.execute(
            text("SELECT subject, attachments, deliveries, channel FROM outbox")
        ).one()
        # Every row written before 0006 was an email, and says so.
        assert (subject, _loaded(attachments), _loaded(deliveries), channel) == (
            "Low balance",
            [],
            {},
            "email",
        )
        preference = conn.execute(
            text("SELECT threshold_1, threshold_2, threshold_3, remind, enabled FROM owner_preference")
        ).one()
        assert tuple(preference) == (5000, 1000, None, True, True)


def _loaded(value: Any) -> Any:
    # SQLite hands JSON back as text to a raw query, PostgreSQL decoded.
    return json.loads(value) if isinstance(value, str) else value


def _json(engine: Engine, value: Any) -> Any:
    return json.dumps(value) if engine.dialect.name == "sqlite" else value


# --- the revisions ----------------------------------------------------------------------------------


def test_revision_ids_are_the_schema_versions_in_one_line_ending_at_this_versions_head() -> None:
    from balancewatch.store.db import _scripts

    chain = [(s.revision, s.down_revision) for s in reversed(list(_scripts().walk_revisions()))]
    expected = [(f"{n:04d}", f"{n - 1:04d}" if n > 1 else None) for n in range(1, SCHEMA_VERSION + 1)]
    assert chain == expected
    assert HEAD == f"{SCHEMA_VERSION:04d}" == _scripts().get_current_head()


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_each_revision_builds_what_that_versions_code_created(blank: Blank, version: int) -> None:
    _, migrated = blank()
    _, snapshot = blank()
    migrate_to(migrated, f"{version:04d}")
    load_snapshot(snapshot, version)

    assert shape(migrated) == shape(snapshot)


def test_the_migrations_alone_build_exactly_what_the_models_declare(blank: Blank) -> None:
    _, migrated = blank()
    migrate_to(migrated, "head")

    assert shape(migrated) == fresh_head(blank)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_a_database_at_an_earlier_revision_upgrades_to_the_fresh_schema_keeping_its_rows(
    blank: Blank, version: int
) -> None:
    _, engine = blank()
    migrate_to(engine, f"{version:04d}")
    put_rows(engine, version)

    assert upgrade(engine) == SCHEMA_VERSION

    assert shape(engine) == fresh_head(blank)
    assert revision_of(engine) == [HEAD]
    assert_rows_kept(engine)


# --- databases the hand-written upgrade made ---------------------------------------------------------


def test_a_version_4_database_made_by_the_old_upgrade_is_adopted_and_gains_the_later_columns(
    blank: Blank,
) -> None:
    _, engine = blank()
    load_snapshot(engine, 4)
    put_rows(engine, 4)
    assert schema_status(engine).current == "0004"

    upgrade(engine)

    assert {"version", "last_poll_at"} <= {c["name"] for c in inspect(engine).get_columns("instance_status")}
    assert "channel" in {c["name"] for c in inspect(engine).get_columns("outbox")}
    assert shape(engine) == fresh_head(blank)
    assert revision_of(engine) == [HEAD]
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT value FROM balancewatch_meta WHERE name = 'schema_version'")
        ).scalar() == (str(SCHEMA_VERSION))
    assert_rows_kept(engine)


def test_db_upgrade_puts_back_an_index_dropped_by_hand_from_an_old_version_4_database(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    load_snapshot(engine, 4)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_outbox_due"))

    assert main(["db", "upgrade"], ENVIRON | {"BALANCEWATCH_DATABASE__URL": url}) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[:5] == [
        "applying 0005: instance version and last poll",
        "applying 0006: outbox channel",
        "applying 0007: incremental usage",
        "applying 0008: outbox render stage",
        "repairing: created index ix_outbox_due on outbox",
    ]
    assert out[5].startswith(f"schema at {HEAD} (head) in ")
    assert "ix_outbox_due" in {i["name"] for i in inspect(engine).get_indexes("outbox")}
    assert shape(engine) == fresh_head(blank)


def test_db_upgrade_puts_back_an_index_dropped_from_a_database_at_head(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_outbox_due"))

    assert main(["db", "upgrade"], ENVIRON | {"BALANCEWATCH_DATABASE__URL": url}) == 0

    assert capsys.readouterr().out.splitlines()[0] == "repairing: created index ix_outbox_due on outbox"
    assert "ix_outbox_due" in {i["name"] for i in inspect(engine).get_indexes("outbox")}


# --- db current ------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), ENVIRON | {"BALANCEWATCH_DATABASE__URL": url})
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_db_current_says_how_far_behind_a_database_is_and_exits_1_until_upgraded(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    assert run_cli(capsys, url, "db", "current") == (1, "no schema: run `balancewatch db upgrade`\n", "")

    migrate_to(engine, "0003")
    assert run_cli(capsys, url, "db", "current") == (
        1,
        "0003; 5 revisions behind: run `balancewatch db upgrade`\n",
        "",
    )

    migrate_to(engine, "0004")
    assert run_cli(capsys, url, "db", "current")[:2] == (
        1,
        "0004; 4 revisions behind: run `balancewatch db upgrade`\n",
    )

    code, out, _ = run_cli(capsys, url, "db", "upgrade")
    assert (code, out.splitlines()[0]) == (0, "applying 0005: instance version and last poll")
    assert run_cli(capsys, url, "db", "current") == (0, f"{HEAD} (head)\n", "")


def test_db_current_reads_the_version_an_old_database_recorded_without_changing_it(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    load_snapshot(engine, 2)
    before = shape(engine)

    assert run_cli(capsys, url, "db", "current")[:2] == (
        1,
        "0002; 6 revisions behind: run `balancewatch db upgrade`\n",
    )
    assert shape(engine) == before


def test_db_current_on_a_database_from_a_newer_balancewatch_exits_1(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))

    code, out, _ = run_cli(capsys, url, "db", "current")

    assert (code, out) == (1, f"0099; newer than this balancewatch (head {HEAD}): run a newer balancewatch\n")


def test_db_current_on_a_missing_sqlite_file_creates_neither_the_file_nor_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "nowhere" / "balancewatch.db"

    assert run_cli(capsys, f"sqlite:///{file}", "db", "current")[:2] == (
        1,
        "no schema: run `balancewatch db upgrade`\n",
    )
    assert not file.parent.exists()


# --- the engines commands use ------------------------------------------------------------------------


def ctx_for(url: str, tmp_path: Path) -> Ctx:
    environ = {"BALANCEWATCH_DATABASE__URL": url, "BALANCEWATCH_STATE_DIR": str(tmp_path / "state")}
    return Ctx(argparse.Namespace(config=None), environ)


def test_a_read_only_command_on_a_missing_sqlite_file_says_how_to_create_it_and_creates_nothing(
    tmp_path: Path,
) -> None:
    file = tmp_path / "nowhere" / "balancewatch.db"
    ctx = ctx_for(f"sqlite:///{file}", tmp_path)
    try:
        with pytest.raises(CommandError) as refused:
            _ = ctx.read_engine
    finally:
        ctx.close()

    assert str(refused.value) == (
        f"no database at sqlite:///{file}: start `balancewatch run` or run `balancewatch db upgrade` "
        "to create it"
    )
    assert not file.parent.exists()


def test_a_read_only_command_on_an_empty_database_creates_no_table(blank: Blank, tmp_path: Path) -> None:
    url, engine = blank()
    ctx = ctx_for(url, tmp_path)
    try:
        with pytest.raises(CommandError, match=r"^no database at .*: start `balancewatch run`"):
            _ = ctx.read_engine
    finally:
        ctx.close()

    assert inspect(engine).get_table_names() == []


def test_a_read_only_command_works_on_a_current_database(blank: Blank, tmp_path: Path) -> None:
    url, engine = blank()
    upgrade(engine)
    ctx = ctx_for(url, tmp_path)
    try:
        with ctx.read_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM account")).scalar() == 0
    finally:
        ctx.close()


def test_a_command_that_writes_refuses_an_out_of_date_database_in_one_line_and_changes_nothing(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    migrate_to(engine, "0003")
    before = shape(engine)

    code, out, err = run_cli(
        capsys, url, "accounts", "add", "acme", "--name", "Acme", "--email", "o@acme.example"
    )

    assert (code, out) == (1, "")
    assert err == (
        "balancewatch accounts add: the database schema is at 0003, this balancewatch needs "
        f"{HEAD}: run `balancewatch db upgrade`\n"
    )
    assert shape(engine) == before
    assert revision_of(engine) == ["0003"]


def test_a_read_only_command_refuses_an_out_of_date_database_in_the_same_line(
    blank: Blank, tmp_path: Path
) -> None:
    url, engine = blank()
    load_snapshot(engine, 4)
    ctx = ctx_for(url, tmp_path)
    try:
        with pytest.raises(CommandError) as refused:
            _ = ctx.read_engine
    finally:
        ctx.close()

    assert str(refused.value) == (
        f"the database schema is at 0004, this balancewatch needs {HEAD}: run `balancewatch db upgrade`"
    )


def test_a_command_that_writes_refuses_a_database_from_a_newer_balancewatch(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))

    code, _, err = run_cli(capsys, url, "accounts", "list")

    assert code == 1
    assert err.startswith("balancewatch accounts list: the database schema is at 0099, newer than this")
    assert err.count("\n") == 1


def test_upgrade_refuses_a_database_from_a_newer_balancewatch_and_writes_nothing(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        conn.execute(text("DROP INDEX ix_outbox_due"))

    code, _, err = run_cli(capsys, url, "db", "upgrade")

    assert (code, err) == (
        1,
        "balancewatch db upgrade: the database schema is at 0099, "
        f"newer than this balancewatch knows ({HEAD})\n",
    )
    assert "ix_outbox_due" not in {i["name"] for i in inspect(engine).get_indexes("outbox")}


def test_the_first_command_that_writes_creates_the_schema_of_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "state" / "balancewatch.db"
    url = f"sqlite:///{file}"

    code, _, err = run_cli(
        capsys, url, "accounts", "add", "acme", "--name", "Acme", "--email", "o@acme.example"
    )

    assert (code, err) == (0, "")
    engine = make_engine(url)
    try:
        assert schema_status(engine).state == "current"
    finally:
        engine.dispose()


def test_run_refuses_an_out_of_date_database_with_ex_config_so_systemd_stops_restarting_it(
    blank: Blank, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = blank()
    load_snapshot(engine, 3)

    code, out, err = run_cli(capsys, url, "run", "--once")

    assert (code, out) == (78, "")  # the unit's RestartPreventExitStatus=78
    assert err == (
        f"balancewatch run: the database schema is at 0003, this balancewatch needs {HEAD}: "
        "run `balancewatch db upgrade`\n"
    )
    assert run_cli(capsys, url, "db", "current")[0] == 1  # nothing was upgraded behind the operator's back
