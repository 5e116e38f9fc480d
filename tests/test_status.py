"""`balancewatch status`: the instance rows daemons publish, read back through the CLI, on both backends.

Exit status 0 needs one instance with a fresh heartbeat whose last reload went
well; anything else is 1 with the reason on stderr.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from balancewatch.cli import main
from balancewatch.cli.status import stale_after, verdict
from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Daemon, build_pipeline
from balancewatch.store import status as instance_status
from balancewatch.store.tables import OUTBOX_TABLE, InstanceStatus
from tests.test_daemon import Cli, cli, wait_until  # noqa: F401  (cli is a fixture)

DIGEST = "3f2a9c1d0e4b" + "0" * 52
ERROR = "/etc/balancewatch/rules/ladder.yaml:5: alerts[0].below[1]: 'abc' is not an amount"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Status = Callable[..., Result]


@pytest.fixture
def status(capsys: pytest.CaptureFixture[str], db_url: str, tmp_path: Path) -> Iterator[Status]:
    """Run ``balancewatch status ARGS`` in-process against the test database."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    env = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_DATABASE__URL": db_url,
        "BALANCEWATCH_LOG__LEVEL": "warning",
    }

    def invoke(*args: str, environ: dict[str, str] | None = None) -> Result:
        capsys.readouterr()
        code = main(["status", *args], environ or env)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level  # the CLI sets up logging for a whole process


def publish(engine: Engine, instance: str, heartbeat_ago: timedelta, **values: Any) -> None:
    now = datetime.now(UTC)
    row = {
        "started_at": now - timedelta(hours=2),
        "heartbeat_at": now - heartbeat_ago,
        "live_digest": DIGEST,
        "live_rules": 3,
        "live_loaded_at": now - timedelta(hours=1),
        "rule_files": {"ladder.yaml": "alerts: []\n"},
        **values,
    }
    with engine.begin() as conn:
        instance_status.publish(conn, instance, row)


def reloaded(ok: bool, error: str | None = None) -> dict[str, Any]:
    return {
        "reload_attempted_at": datetime.now(UTC) - timedelta(minutes=5),
        "reload_ok": ok,
        "reload_reason": "file modified: /etc/balancewatch/rules/ladder.yaml",
        "reload_error": error,
        "reloads": 2 if ok else 1,
    }


def test_status_exits_0_and_shows_each_instance_when_one_is_fresh_with_its_last_reload_ok(
    status: Status, engine: Engine
) -> None:
    publish(engine, "alpha:10", timedelta(seconds=3), **reloaded(ok=True))
    publish(engine, "beta:20", timedelta(hours=1))

    result = status()

    assert (result.code, result.err) == (0, "")
    alpha, beta = result.out.split("\n\n")[:2]
    assert alpha.splitlines()[0] == "alpha:10  RUNNING"
    assert "  live set        3f2a9c1d0e4b, 3 rules, loaded " in alpha
    assert ": ok (file modified: /etc/balancewatch/rules/ladder.yaml)" in alpha
    assert "  reloads         2 since start" in alpha
    assert "STALE" not in alpha
    assert beta.splitlines()[0] == "beta:20  STALE"
    assert "(1h ago)  STALE" in beta
    assert "  last reload     none since start" in beta
    assert result.out.rstrip().endswith("ok: 1 instance serving: alpha:10")


def test_status_exits_1_with_the_file_line_error_when_the_last_reload_was_refused(
    status: Status, engine: Engine
) -> None:
    publish(engine, "alpha:10", timedelta(seconds=3), **reloaded(ok=False, error=ERROR))

    result = status()

    assert result.code == 1
    assert (
        ": REFUSED, the live set above stays (file modified: /etc/balancewatch/rules/ladder.yaml)"
        in result.out
    )
    assert f"                  {ERROR}" in result.out.splitlines()
    assert result.err == (
        f"balancewatch status: the last reload of every running instance was refused; alpha:10: {ERROR}\n"
    )


def test_status_exits_1_when_every_heartbeat_is_stale(status: Status, engine: Engine) -> None:
    publish(engine, "alpha:10", timedelta(minutes=10), **reloaded(ok=True))

    result = status()

    assert result.code == 1
    assert result.err.startswith(
        "balancewatch status: no instance has a fresh heartbeat: the latest, alpha:10, reported 10m ago"
    )


def test_status_exits_1_when_no_instance_ever_reported(status: Status) -> None:
    result = status()
    assert result.code == 1
    assert "no instance has reported to this database" in result.err


def test_status_json_carries_every_field_and_the_verdict(status: Status, engine: Engine) -> None:
    publish(engine, "alpha:10", timedelta(seconds=3), **reloaded(ok=False, error=ERROR))
    publish(engine, "beta:20", timedelta(seconds=1), **reloaded(ok=True))

    result = status("--json")

    assert result.code == 0
    data = json.loads(result.out)
    assert (data["ok"], data["reason"], data["stale_after_seconds"]) == (
        True,
        "1 instance serving: beta:20",
        90,
    )
    [beta, alpha] = data["instances"]  # most recent heartbeat first
    assert alpha["instance"] == "alpha:10"
    assert (alpha["stale"], alpha["reload_ok"], alpha["reload_error"]) == (False, False, ERROR)
    assert alpha["live_digest"] == DIGEST
    assert alpha["rule_files"] == ["ladder.yaml"]
    assert datetime.fromisoformat(alpha["heartbeat_at"]).tzinfo is not None
    assert (beta["reload_ok"], beta["reloads"]) == (True, 2)


def test_a_heartbeat_is_stale_after_three_poll_intervals_and_never_sooner_than_15s() -> None:
    assert stale_after(timedelta(seconds=30)) == timedelta(seconds=90)
    assert stale_after(timedelta(seconds=1)) == timedelta(seconds=15)


def test_an_instance_with_no_reload_since_start_counts_as_ok() -> None:
    now = datetime(2026, 3, 1, 9, tzinfo=UTC)

    @dataclass
    class Row:
        instance: str = "alpha:10"
        heartbeat_at: datetime = now - timedelta(seconds=5)
        reload_ok: bool | None = None
        reload_error: str | None = None
        stopped_at: datetime | None = None

    assert verdict([Row()], now, timedelta(seconds=90)).ok
    assert not verdict([Row(reload_ok=False)], now, timedelta(seconds=90)).ok
    assert not verdict([Row()], now + timedelta(minutes=2), timedelta(seconds=90)).ok
    assert not verdict([Row(stopped_at=now)], now, timedelta(seconds=90)).ok


def test_an_instance_that_shut_down_shows_as_stopped_at_once_not_serving(
    status: Status, engine: Engine
) -> None:
    now = datetime.now(UTC)
    publish(engine, "alpha:10", timedelta(seconds=1), stopped_at=now - timedelta(seconds=1), version="0.1.0")

    result = status()

    assert result.code == 1
    assert result.out.splitlines()[0] == "alpha:10  STOPPED"
    assert "stopped 1s ago" in result.out
    assert result.err.startswith("balancewatch status: no instance is running: the latest, alpha:10, stopped")
    assert json.loads(status("--json").out)["instances"][0]["state"] == "stopped"


def test_status_shows_version_uptime_last_poll_and_the_mail_pending_and_parked(
    status: Status, engine: Engine
) -> None:
    now = datetime.now(UTC)
    publish(
        engine, "alpha:10", timedelta(seconds=2), version="9.8.7", last_poll_at=now - timedelta(seconds=12)
    )
    with engine.begin() as conn:
        outbox = OUTBOX_TABLE
        for key, state in [("a", "pending"), ("b", "sending"), ("c", "parked"), ("d", "sent")]:
            conn.execute(
                outbox.insert().values(
                    idem_key=key,
                    message_id=f"<{key}@x>",
                    kind="alert",
                    recipients=["o@x.example"],
                    status=state,
                    created_at=now - timedelta(minutes=7),
                    next_attempt_at=now,
                )
            )

    result = status()

    assert result.code == 0, result
    assert "  version         9.8.7" in result.out
    assert "(up 2h)" in result.out
    assert "  last poll       " in result.out and "(12s ago)" in result.out
    assert "mail: 2 pending (oldest decided 7m ago), 1 parked; see `balancewatch outbox list" in result.out
    data = json.loads(status("--json").out)
    assert data["mail"]["pending"] == 2 and data["mail"]["parked"] == 1
    [alpha] = data["instances"]
    assert (alpha["version"], alpha["state"], alpha["uptime_seconds"] // 60) == ("9.8.7", "running", 120)
    assert alpha["last_poll_at"] is not None


def test_instances_silent_for_a_week_are_pruned_and_recent_ones_kept(engine: Engine) -> None:
    publish(engine, "old:1", timedelta(days=8))
    publish(
        engine, "stopped-yesterday:2", timedelta(days=1), stopped_at=datetime.now(UTC) - timedelta(days=1)
    )
    with engine.begin() as conn:
        assert instance_status.prune(conn, datetime.now(UTC)) == ["old:1"]
        assert [row.instance for row in instance_status.read_all(conn)] == ["stopped-yesterday:2"]


def test_publish_updates_the_columns_given_and_keeps_the_others(engine: Engine) -> None:
    publish(engine, "alpha:10", timedelta(seconds=3), **reloaded(ok=True))
    later = datetime.now(UTC)
    with engine.begin() as conn:
        instance_status.publish(conn, "alpha:10", {"heartbeat_at": later})
        [row] = instance_status.read_all(conn)
    assert row.heartbeat_at == later
    assert (row.live_digest, row.reload_ok, row.reloads) == (DIGEST, True, 2)


def test_publish_inserts_a_new_instance_from_its_start_and_heartbeat_times_alone(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        instance_status.publish(conn, "fresh:1", {"started_at": now, "heartbeat_at": now})
        [row] = instance_status.read_all(conn)
    assert (row.instance, row.rule_files, row.reloads, row.reload_ok) == ("fresh:1", {}, 0, None)


def test_a_daemon_that_could_not_write_its_status_at_start_writes_the_whole_row_at_a_later_heartbeat(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = live_from("alerts:\n  - id: ladder\n    accounts: {currency: USD}\n    below: [100]\n")
    daemon = Daemon(build_pipeline(engine, make_settings(db_url, instance="alpha"), live))
    table = InstanceStatus.__table__  # type: ignore[attr-defined]
    table.drop(engine)  # the status table is out of reach for a while
    heartbeat = daemon.job("heartbeat", daemon.heartbeat_job)
    heartbeat()
    assert "heartbeat" in caplog.text
    assert daemon.pipeline.beating_since is None

    table.create(engine)
    heartbeat()
    assert daemon.pipeline.beating_since is not None
    row = _row(engine)
    assert (row.instance, row.started_at, row.live_digest) == ("alpha", daemon.started_at, live.digest)
    assert row.rule_files == {"rules.yaml": live.rule_sources[0].text}


def test_a_running_daemon_reports_a_refused_edit_in_status_and_the_fix_clears_it(
    cli: Cli,  # noqa: F811
    status: Status,
    engine: Engine,
    rules_dir: Path,
) -> None:
    daemon = cli.start(reload__debounce="100ms")
    wait_until(lambda: _reloads(engine) is not None, "the instance's status row")
    healthy = status(environ=cli.env)
    assert healthy.code == 0, healthy
    assert "last reload     none since start" in healthy.out

    path = rules_dir / "rules.yaml"
    good = path.read_text()
    path.write_text(good.replace("below: [250, 100, 10]", "below: [250, abc, 10]"))
    wait_until(lambda: _row(engine).reload_ok is False, "the refused reload in the status row")
    refused = status(environ=cli.env)
    assert refused.code == 1
    assert f"{path}:5: alerts[0].below[1]: 'abc' is not an amount" in refused.err
    assert f"reload refused: {path}:5: alerts[0].below[1]" in daemon.log

    path.write_text(good.replace("below: [250, 100, 10]", "below: [250, 100, 5]"))
    wait_until(lambda: _reloads(engine) == 1, "the fixed set reloaded")
    fixed = status(environ=cli.env)
    assert fixed.code == 0, fixed
    assert ": ok (file " in fixed.out
    assert daemon.stop(signal.SIGTERM) == 0


def _row(engine: Engine) -> Any:
    with engine.connect() as conn:
        [row] = instance_status.read_all(conn)
    return row


def _reloads(engine: Engine) -> int | None:
    with engine.connect() as conn:
        rows = instance_status.read_all(conn)
    return rows[0].reloads if rows else None
