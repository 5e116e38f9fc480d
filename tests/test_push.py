"""On PostgreSQL a changed balance is evaluated at once: ``db upgrade`` installs the trigger
that NOTIFYs, the daemon LISTENs, and polling stays the safety net when the connection breaks."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from balancewatch.cli import main
from balancewatch.store import notify
from tests.helpers import account, set_balance
from tests.smtpserver import SmtpServer
from tests.test_daemon import Cli, cli  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def channel() -> str:
    return "bw_test_" + uuid.uuid4().hex[:10]  # tests share the server: each its own channel


def test_db_upgrade_installs_the_trigger_once_and_not_when_listen_is_not_trigger(
    engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = channel()
    environ = {"BALANCEWATCH_DATABASE__URL": db_url, "BALANCEWATCH_DATABASE__NOTIFY_CHANNEL": name}
    assert main(["db", "upgrade"], environ | {"BALANCEWATCH_DATABASE__LISTEN": "platform"}) == 0
    with engine.connect() as conn:
        assert notify.installed_channel(conn) is None
    assert main(["db", "upgrade"], environ) == 0
    assert f"installing the trigger that announces balance changes (NOTIFY {name})" in capsys.readouterr().out
    assert main(["db", "upgrade"], environ) == 0
    assert "installing" not in capsys.readouterr().out
    with engine.connect() as conn:
        assert notify.installed_channel(conn) == name


def test_a_change_is_emailed_at_once_without_waiting_for_the_poll_and_after_the_listener_reconnects(
    cli: Cli,  # noqa: F811  (the daemon tests' fixture)
    engine: Engine,
    smtp_server: SmtpServer,
) -> None:
    name = channel()
    with engine.begin() as conn:
        notify.install(conn, name)
    account(engine, "acme")
    account(engine, "globex")
    set_balance(engine, "acme", "USD", 300_00, _now())
    set_balance(engine, "globex", "USD", 300_00, _now())
    # A poll an hour apart: only the notification can explain an email within seconds.
    daemon = cli.start(poll_interval="1h", sweep_interval="1h", database__notify_channel=name)
    daemon.wait_log(f"listening for balance changes (NOTIFY {name})")

    started = time.monotonic()
    set_balance(engine, "acme", "USD", 90_00, _now())
    smtp_server.wait_for(1, timeout=10)
    assert time.monotonic() - started < 5

    with engine.connect() as conn:  # the LISTEN connection breaks (a failover, a restart)
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"balancewatch listen {name}"},
        )
    daemon.wait_log(f"listening for balance changes again (NOTIFY {name})")
    assert "cannot listen for balance changes" in daemon.log
    set_balance(engine, "globex", "USD", 90_00, _now())
    smtp_server.wait_for(2, timeout=10)
    assert daemon.stop() == 0


def _now() -> datetime:
    return datetime.now(UTC)
