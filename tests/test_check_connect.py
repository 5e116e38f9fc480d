"""``check --connect`` reaches the database and the SMTP server for real, creating and sending nothing;
``send-test`` that fails leaves nothing queued; an empty rule set is a warning, not a failure.

Real parts throughout: the loopback SMTP server (plain, STARTTLS and implicit TLS with a
certificate made for the run, with login), SQLite files, PostgreSQL, and closed ports.
"""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from balancewatch.cli import main
from balancewatch.store.db import make_engine
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import _schema_url, postgres_engine
from tests.smtpserver import SmtpServer, free_port
from tests.test_tls import LOGIN, make_certificate, server_context

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def bw(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[Cli]:
    """``balancewatch ARGV`` in-process with state in tmp_path plus ``env``; logging and signal
    handlers, which the CLI sets for a whole process, are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    # The loopback server runs in this process: its own log records (aiosmtpd's, and asyncio's
    # about a TLS handshake the client broke off) would reach the CLI's stderr handler.
    server_logs = [logging.getLogger(name) for name in ("mail.log", "asyncio")]
    kept_propagate = [server_log.propagate for server_log in server_logs]
    quiet = logging.NullHandler()
    for server_log in server_logs:
        server_log.propagate = False
        server_log.addHandler(quiet)

    def invoke(*argv: str, **env: str) -> Result:
        environ = {"BALANCEWATCH_STATE_DIR": str(tmp_path / "state"), "BALANCEWATCH_LOG__LEVEL": "warning"}
        environ.update({f"BALANCEWATCH_{k.upper()}": v for k, v in env.items()})
        capsys.readouterr()
        code = main(list(argv), environ)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level
    for server_log, propagate in zip(server_logs, kept_propagate, strict=True):
        server_log.propagate = propagate
        server_log.removeHandler(quiet)
    for number, handler in kept.items():
        signal.signal(number, handler)


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture(scope="module")
def loopback_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("loopback"), "DNS:localhost,IP:127.0.0.1")


def started(server: SmtpServer) -> Iterator[SmtpServer]:
    server.start()
    yield server
    server.stop()


@pytest.fixture
def starttls_server(loopback_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    yield from started(SmtpServer(tls_context=server_context(loopback_cert), auth=LOGIN))


@pytest.fixture
def implicit_tls_server(loopback_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    yield from started(SmtpServer(tls_context=server_context(loopback_cert), auth=LOGIN, implicit_tls=True))


def smtp_env(server: SmtpServer, **extra: str) -> dict[str, str]:
    return {**server.env(), "smtp__timeout": "5s", **extra}


def login(password: str = LOGIN[1]) -> dict[str, str]:
    return {"smtp__username": LOGIN[0], "smtp__password": password}


# --- the database -----------------------------------------------------------------------------------


def test_a_missing_sqlite_file_is_reported_and_not_created(bw: Cli, tmp_path: Path) -> None:
    database = tmp_path / "state" / "balancewatch.db"
    result = bw("check", "--connect")
    assert (result.code, result.err) == (0, "")
    assert lines(result.out)[1] == (
        f"database sqlite:///{database}: no database file yet: "
        "`balancewatch run` or `balancewatch db upgrade` creates it"
    )
    assert not database.exists()


def test_a_database_with_the_current_schema_says_so(bw: Cli, db_url: str) -> None:
    result = bw("check", "--connect", database__url=db_url)
    assert (result.code, result.err) == (0, "")
    assert lines(result.out)[1].startswith("database ")
    assert ": schema current" in lines(result.out)[1]


@pytest.mark.postgres
def test_a_postgresql_schema_not_made_yet_is_reported_and_left_empty(bw: Cli) -> None:
    schema = "t_" + uuid.uuid4().hex[:12]
    for engine in postgres_engine(schema):
        result = bw("check", "--connect", database__url=_schema_url(schema))
        assert (result.code, result.err) == (0, "")
        assert lines(result.out)[1].endswith(
            ": no schema yet: `balancewatch run` or `balancewatch db upgrade` creates it"
        )
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []


def test_an_unreachable_postgresql_is_one_line_and_exit_1(bw: Cli) -> None:
    port = free_port()
    result = bw("check", "--connect", database__url=f"postgresql://bw:pgsecret@127.0.0.1:{port}/bw")
    assert result.code == 1
    [line] = lines(result.err)
    assert line.startswith(f"database postgresql://bw:***@127.0.0.1:{port}/bw: ")
    assert "refused" in line.lower()
    assert "pgsecret" not in result.out + result.err


def test_a_sqlite_file_that_is_not_a_database_is_one_line_and_exit_1(bw: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all, just some text long enough" * 20)
    result = bw("check", "--connect", database__url=f"sqlite:///{junk}")
    assert result.code == 1
    assert lines(result.err) == [f"database sqlite:///{junk}: file is not a database"]


# --- the SMTP server --------------------------------------------------------------------------------


def test_a_plain_smtp_server_is_reached_and_sent_nothing(bw: Cli, smtp_server: SmtpServer) -> None:
    result = bw("check", "--connect", **smtp_env(smtp_server))
    assert (result.code, result.err) == (0, "")
    assert lines(result.out)[-1] == f"smtp 127.0.0.1:{smtp_server.port}: connected (none)"
    assert smtp_server.received == []


def test_a_closed_smtp_port_is_connection_refused_and_exit_1(bw: Cli) -> None:
    port = free_port()
    result = bw("check", "--connect", smtp__host="127.0.0.1", smtp__port=str(port), smtp__security="none")
    assert result.code == 1
    assert lines(result.err) == [f"smtp 127.0.0.1:{port}: connection refused"]


def test_starttls_with_the_ca_file_logs_in(
    bw: Cli, starttls_server: SmtpServer, loopback_cert: tuple[Path, Path]
) -> None:
    result = bw(
        "check", "--connect", **smtp_env(starttls_server, smtp__ca_file=str(loopback_cert[0]), **login())
    )
    assert (result.code, result.err) == (0, "")
    assert (
        lines(result.out)[-1]
        == f"smtp 127.0.0.1:{starttls_server.port}: connected (starttls, logged in as 'alerts')"
    )
    assert starttls_server.received == []


def test_starttls_to_an_untrusted_certificate_says_certificate_verify_failed(
    bw: Cli, starttls_server: SmtpServer
) -> None:
    result = bw("check", "--connect", **smtp_env(starttls_server, **login()))
    assert result.code == 1
    [line] = lines(result.err)
    assert line.startswith(f"smtp 127.0.0.1:{starttls_server.port}: certificate verify failed: self")
    assert line.endswith("; set smtp.ca_file if the server's CA is private")


def test_a_wrong_password_is_login_refused_with_the_server_reply(
    bw: Cli, starttls_server: SmtpServer, loopback_cert: tuple[Path, Path]
) -> None:
    env = smtp_env(starttls_server, smtp__ca_file=str(loopback_cert[0]), **login("wrong"))
    result = bw("check", "--connect", **env)
    assert result.code == 1
    [line] = lines(result.err)
    assert line.startswith(f"smtp 127.0.0.1:{starttls_server.port}: login refused: 535 ")
    assert "wrong" not in line


def test_implicit_tls_with_the_ca_file_logs_in(
    bw: Cli, implicit_tls_server: SmtpServer, loopback_cert: tuple[Path, Path]
) -> None:
    env = smtp_env(implicit_tls_server, smtp__ca_file=str(loopback_cert[0]), **login())
    result = bw("check", "--connect", **env)
    assert (result.code, result.err) == (0, "")
    assert (
        lines(result.out)[-1]
        == f"smtp 127.0.0.1:{implicit_tls_server.port}: connected (tls, logged in as 'alerts')"
    )


def test_both_failures_are_reported_when_database_and_smtp_fail(bw: Cli) -> None:
    pg, smtp = free_port(), free_port()
    result = bw(
        "check",
        "--connect",
        database__url=f"postgresql://bw@127.0.0.1:{pg}/bw",
        smtp__host="127.0.0.1",
        smtp__port=str(smtp),
        smtp__security="none",
    )
    assert result.code == 1
    assert [line.split(": ")[0] for line in lines(result.err)] == [
        f"database postgresql://bw@127.0.0.1:{pg}/bw",
        f"smtp 127.0.0.1:{smtp}",
    ]


def test_without_connect_check_opens_neither(bw: Cli, tmp_path: Path) -> None:
    port = free_port()
    result = bw("check", smtp__host="127.0.0.1", smtp__port=str(port), smtp__security="none")
    assert (result.code, result.err) == (0, "")
    assert len(lines(result.out)) == 1
    assert not (tmp_path / "state" / "balancewatch.db").exists()


# --- send-test --------------------------------------------------------------------------------------


def outbox_rows(db_url: str) -> list[dict[str, object]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(select(OUTBOX_TABLE))]
    finally:
        engine.dispose()


def test_send_test_refused_by_the_server_exits_1_and_leaves_no_outbox_row(
    bw: Cli, db_url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse["ops@example.com"] = "550 5.1.1 no such user"
    result = bw("send-test", "--to", "ops@example.com", database__url=db_url, **smtp_env(smtp_server))
    assert (result.code, result.out) == (1, "")
    assert lines(result.err) == ["balancewatch send-test: not sent: ops@example.com: 550 5.1.1 no such user"]
    assert outbox_rows(db_url) == []


def test_send_test_to_a_closed_port_exits_1_and_leaves_no_outbox_row(bw: Cli, db_url: str) -> None:
    port = free_port()
    env = {
        "smtp__host": "127.0.0.1",
        "smtp__port": str(port),
        "smtp__security": "none",
        "smtp__timeout": "5s",
    }
    result = bw("send-test", "--to", "ops@example.com", database__url=db_url, **env)
    assert (result.code, result.out) == (1, "")
    [line] = lines(result.err)
    assert line.startswith(f"balancewatch send-test: not sent: connect to 127.0.0.1:{port}: ")
    assert outbox_rows(db_url) == []


def test_send_test_that_is_delivered_is_recorded_as_sent(
    bw: Cli, db_url: str, smtp_server: SmtpServer
) -> None:
    result = bw("send-test", "--to", "ops@example.com", database__url=db_url, **smtp_env(smtp_server))
    assert (result.code, result.err) == (0, "")
    [received] = smtp_server.wait_for(1)
    [row] = outbox_rows(db_url)
    assert (row["status"], row["recipients"], row["kind"]) == ("sent", ["ops@example.com"], "test")
    assert received.message["Message-ID"] == row["message_id"]


# --- an empty rule set ------------------------------------------------------------------------------


def test_an_empty_rules_directory_is_a_warning_from_check_and_run_not_a_failure(
    bw: Cli, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "only-comments.yaml").write_text("# every rule was removed for now\n")
    warning = f"{rules}: no rules: nothing will ever alert"
    checked = bw("check", rules_dir=str(rules))
    assert (checked.code, lines(checked.err)) == (0, [f"warning: {warning}"])
    ran = bw("run", "--once", rules_dir=str(rules))
    assert ran.code == 0
    assert [line for line in lines(ran.err) if warning in line] != []
    assert "WARNING" in next(line for line in lines(ran.err) if warning in line)


def test_run_refuses_a_bad_config_before_creating_the_database(bw: Cli, tmp_path: Path) -> None:
    result = bw("run", "--once", smtp__hots="mail.example.com")
    assert result.code == 78  # EX_CONFIG: systemd does not restart a refused config in a loop
    assert lines(result.err)[-1] == "cannot start: the config has problems: 1 problem"
    assert not (tmp_path / "state" / "balancewatch.db").exists()
