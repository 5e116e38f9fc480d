"""SMTP over verified TLS: STARTTLS and implicit TLS, a CA file, and login.

Certificates are made for each run with the ``openssl`` command. What is
checked is the TLS client, so these tests run on SQLite only.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from tests.conftest import Clock
from tests.smtpserver import SmtpServer
from tests.test_delivery import NO_RULES, add_messages, outbox_rows

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
    # Under implicit TLS the whole session is encrypted; aiosmtpd warns only because STARTTLS is not required.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

LOGIN = ("alerts", "s3cret pass")


def make_certificate(directory: Path, names: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for ``names`` and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=balancewatch test", "-addext", f"subjectAltName={names}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def loopback_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("loopback"), "DNS:localhost,IP:127.0.0.1")


@pytest.fixture(scope="module")
def other_name_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("other"), "DNS:mail.other.example")


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    return context


def start(server: SmtpServer) -> Iterator[SmtpServer]:
    server.start()
    yield server
    server.stop()


@pytest.fixture
def starttls_server(loopback_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    yield from start(SmtpServer(tls_context=server_context(loopback_cert), auth=LOGIN))


@pytest.fixture
def implicit_tls_server(loopback_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    yield from start(SmtpServer(tls_context=server_context(loopback_cert), auth=LOGIN, implicit_tls=True))


@pytest.fixture
def pipeline_for(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
) -> Callable[..., Pipeline]:
    def make(server: SmtpServer, **env: str) -> Pipeline:
        login = {"smtp__username": LOGIN[0], "smtp__password": LOGIN[1], "smtp__timeout": "5s"}
        settings = make_settings(db_url, **{**server.env(), **login, **env})
        return build_pipeline(engine, settings, live_from(NO_RULES))

    return make


def test_starttls_to_a_server_whose_certificate_is_not_trusted_is_refused_and_retried(
    engine: Engine, clock: Clock, pipeline_for: Callable[..., Pipeline], starttls_server: SmtpServer
) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    assert pipeline_for(starttls_server).deliver(clock()).outcomes == {"retry": 1}
    row = outbox_rows(engine)[key]
    assert (row.status, row.attempts) == ("pending", 1)
    assert "CERTIFICATE_VERIFY_FAILED" in row.last_error
    assert starttls_server.received == []


def test_starttls_with_its_ca_file_trusted_logs_in_and_delivers(
    engine: Engine,
    clock: Clock,
    pipeline_for: Callable[..., Pipeline],
    starttls_server: SmtpServer,
    loopback_cert: tuple[Path, Path],
) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    pipeline = pipeline_for(starttls_server, smtp__ca_file=str(loopback_cert[0]))
    assert pipeline.deliver(clock()).outcomes == {"sent": 1}
    [mail] = starttls_server.wait_for(1)
    assert mail.tls
    assert mail.login == "alerts"
    assert mail.rcpt_tos == ("owner@acme.example",)
    assert outbox_rows(engine)[key].status == "sent"


def test_a_trusted_certificate_for_another_host_name_is_refused(
    engine: Engine,
    clock: Clock,
    pipeline_for: Callable[..., Pipeline],
    other_name_cert: tuple[Path, Path],
) -> None:
    server = SmtpServer(tls_context=server_context(other_name_cert), auth=LOGIN)
    for running in start(server):
        [key] = add_messages(engine, clock(), ["owner@acme.example"])
        pipeline = pipeline_for(running, smtp__ca_file=str(other_name_cert[0]))
        assert pipeline.deliver(clock()).outcomes == {"retry": 1}
        assert "mismatch" in outbox_rows(engine)[key].last_error
        assert running.received == []


def test_a_wrong_password_is_retried_with_the_server_reply_recorded(
    engine: Engine,
    clock: Clock,
    pipeline_for: Callable[..., Pipeline],
    starttls_server: SmtpServer,
    loopback_cert: tuple[Path, Path],
) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    pipeline = pipeline_for(starttls_server, smtp__ca_file=str(loopback_cert[0]), smtp__password="wrong")
    assert pipeline.deliver(clock()).outcomes == {"retry": 1}
    row = outbox_rows(engine)[key]
    assert row.last_error.startswith(
        f"owner@acme.example: log in to 127.0.0.1:{starttls_server.port} as 'alerts': 535"
    )
    assert starttls_server.received == []


def test_implicit_tls_with_its_ca_file_trusted_logs_in_and_delivers(
    engine: Engine,
    clock: Clock,
    pipeline_for: Callable[..., Pipeline],
    implicit_tls_server: SmtpServer,
    loopback_cert: tuple[Path, Path],
) -> None:
    add_messages(engine, clock(), ["owner@acme.example"], ["billing@acme.example"])
    pipeline = pipeline_for(implicit_tls_server, smtp__ca_file=str(loopback_cert[0]))
    assert pipeline.deliver(clock()).outcomes == {"sent": 2}
    mails = implicit_tls_server.wait_for(2)
    assert all(m.tls and m.login == "alerts" for m in mails)
    assert len({m.peer for m in mails}) == 1


def test_implicit_tls_to_a_server_whose_certificate_is_not_trusted_is_refused(
    engine: Engine, clock: Clock, pipeline_for: Callable[..., Pipeline], implicit_tls_server: SmtpServer
) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    assert pipeline_for(implicit_tls_server).deliver(clock()).outcomes == {"retry": 1}
    assert "CERTIFICATE_VERIFY_FAILED" in outbox_rows(engine)[key].last_error
    assert implicit_tls_server.received == []
