"""``balancewatch preview``: the live preview server, over real HTTP.

Most tests run the real server (uvicorn, the Starlette app, the watchdog reloader) in a thread on
a free port; the command's own behaviour (the URL it prints, signals, a port in use) is tested
on a real ``balancewatch preview`` process. Every wait is bounded.
"""

from __future__ import annotations

import email
import email.policy
import html
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import Engine

from balancewatch.config import Settings, load_settings
from balancewatch.core import shipped
from balancewatch.store.db import make_engine
from balancewatch.tools.studio.live import AccountSource, Studio
from balancewatch.tools.studio.server import PreviewServer, bind
from tests.helpers import account, all_states, outbox, post
from tests.test_cli import Cli, base_env, run
from tests.test_daemon import wait_until as wait_for

__all__ = ["base_env", "run"]  # fixtures used by name

WAIT = 10.0  # seconds: the bound of every wait for the server, far above what it takes


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(environ={"BALANCEWATCH_STATE_DIR": str(tmp_path / "state")}, search=())


def copied_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), target)
    return target


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """The daemon tests' bounded wait, with this module's deadline."""
    wait_for(condition, what, timeout)


@dataclass
class Served:
    """A preview server running in a thread of the test process."""

    url: str
    studio: Studio
    server: PreviewServer
    templates: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path.lstrip("/"), timeout=WAIT)

    def generation(self) -> int:
        return int(self.get("/-/status").json()["generation"])


def serve(templates: Path, settings: Settings, account: AccountSource | None = None) -> Iterator[Served]:
    """Start the real server on a free port; stop it, and check it stopped, afterwards."""
    studio = Studio(settings, templates, stale_retry=0.2, account=account)
    studio.start()
    sock = bind("127.0.0.1", 0)
    server = PreviewServer(studio)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the server to start")
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}/", studio, server, templates)
    finally:
        server.stop()
        thread.join(WAIT)
        studio.stop()
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(copied_templates(tmp_path), settings_for(tmp_path))


def edit(served: Served, path: Path, text: str) -> None:
    """Write ``path`` and wait for the server to serve the catalogue that has it."""
    before = served.generation()
    path.write_text(text)
    wait_until(lambda: served.generation() > before, f"a reload after writing {path}")


def template_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if (p / "subject.txt").is_file())


# --- pages -----------------------------------------------------------------------------------------


def test_the_index_lists_every_template_with_each_kind_and_sample(served: Served) -> None:
    page = served.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    catalogue = served.studio.snapshot.catalogue
    assert catalogue.names == template_names(served.templates)
    for name, kind, sample in catalogue.entries():
        assert f'href="/m/{name}/{kind}/{sample.name}"' in page.text
        assert html.escape(sample.title, quote=False) in page.text
    assert {"crossed", "in-jpy", "long-name", "restored"} <= {s.name for _, _, s in catalogue.entries()}
    assert served.get("/-/healthy").status_code == 200


def test_a_message_view_shows_subject_recipients_size_and_both_frames(served: Served) -> None:
    page = served.get("/m/low-balance/alert/long-name")
    assert page.status_code == 200
    preview = served.studio.snapshot.catalogue.render(
        "low-balance", *served.studio.snapshot.catalogue.find("low-balance", "long-name")
    )
    assert preview.rendered is not None and preview.message is not None and preview.rendered.html
    assert f'<h1 class="subject">{html.escape(preview.rendered.subject)}</h1>' in page.text
    assert "<th>To</th><td>billing@acme.example</td>" in page.text
    assert f"<th>From</th><td>{html.escape(str(preview.message['From']))}</td>" in page.text
    assert f'<td class="size">{preview.size / 1000:.1f} kB</td>' in page.text
    frames = re.findall(r"<iframe [^>]*>", page.text)
    assert [re.findall(r'class="(\w+)"', f) for f in frames] == [["desktop"], ["phone"]]
    for frame in frames:
        assert 'sandbox=""' in frame and 'src="/raw/low-balance/alert/long-name"' in frame
    assert f'<pre class="text">{html.escape(preview.rendered.text)}</pre>' in page.text
    assert 'rel="prev"' in page.text and 'rel="next"' in page.text and 'href="/#low-balance"' in page.text

    raw = served.get("/raw/low-balance/alert/long-name")
    assert raw.text == preview.rendered.html
    policy = raw.headers["content-security-policy"]
    assert policy.startswith("sandbox;") and "script-src" not in policy
    assert "script-src 'sha256-" in page.headers["content-security-policy"]

    eml = served.get("/eml/low-balance/alert/long-name")
    message = email.message_from_bytes(eml.content, policy=email.policy.default)
    assert message["Subject"] == preview.rendered.subject and message["To"] == "billing@acme.example"


def test_what_a_template_makes_is_escaped_in_the_page(served: Served) -> None:
    subject = served.templates / "low-balance" / "subject.txt"
    edit(served, subject, "<script>alert(1)</script> {{ account.name }}\n")
    page = served.get("/m/low-balance/alert/crossed").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Acme Messaging Ltd" in page
    assert "<script>alert" not in page


def test_an_unknown_sample_is_a_404_saying_what_there_is(served: Served) -> None:
    page = served.get("/m/low-balance/alert/nosuch")
    assert page.status_code == 404 and "no sample &#39;nosuch&#39;" in page.text and "in-jpy" in page.text
    assert served.get("/m/low-balance/report-usage/month").status_code == 404  # not a use of it


def test_a_broken_template_shows_its_file_and_line_and_the_others_still_render(served: Served) -> None:
    body = served.templates / "runway" / "body.txt"
    edit(served, body, "Hello\n{{ account.name | nosuchfilter }}\n")  # refused when compiled
    index = served.get("/").text
    assert f"{body}:2: " in index and "nosuchfilter" in index and "(has an error)" in index
    page = served.get("/m/runway/alert/crossed")
    assert page.status_code == 200
    assert re.search(rf'<pre class="problem">{re.escape(str(body))}:2: [^<]*nosuchfilter', page.text)

    edit(served, body, "Hello\n\n{{ account.no_such_key }}\n")  # fails only when rendered
    page = served.get("/m/runway/alert/crossed")
    assert re.search(rf'<pre class="problem">{re.escape(str(body))}:3: [^<]*no_such_key', page.text)
    other = served.get("/m/low-balance/alert/crossed")
    assert other.status_code == 200 and 'class="problem"' not in other.text


# --- live reload -----------------------------------------------------------------------------------


def events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The events of an open ``text/event-stream`` response (comments left out)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


def test_saving_a_template_sends_an_event_and_the_page_shows_the_edit(served: Served) -> None:
    with httpx.stream("GET", served.url + "events", timeout=WAIT) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        assert next(stream) == {"retry": "1000", "event": "catalogue", "data": "0"}
        body = served.templates / "low-balance" / "body.txt"
        started = time.monotonic()
        body.write_text("EDITED for {{ account.name }}\n")
        assert next(stream) == {"event": "catalogue", "data": "1"}  # a read times out after WAIT
        assert time.monotonic() - started < 1.0
    assert "EDITED for Acme Messaging Ltd" in served.get("/m/low-balance/alert/crossed").text


def test_many_clients_come_and_go_and_the_server_counts_none_left(served: Served) -> None:
    address = ("127.0.0.1", int(served.url.rsplit(":", 1)[1].rstrip("/")))
    clients = []
    for _ in range(12):
        client = socket.create_connection(address, timeout=WAIT)
        client.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        clients.append(client)
    for client in clients:
        received = b""
        while b"event: catalogue" not in received:
            chunk = client.recv(4096)  # bounded by the socket's timeout
            assert chunk, received
            received += chunk
    assert served.get("/-/status").json()["clients"] == 12
    for client in clients:
        client.close()
    wait_until(lambda: served.get("/-/status").json()["clients"] == 0, "the streams to be closed")
    edit(served, served.templates / "low-balance" / "subject.txt", "still serving\n")
    assert "still serving" in served.get("/m/low-balance/alert/crossed").text


def test_a_templates_directory_that_goes_keeps_the_last_catalogue_until_it_is_back(served: Served) -> None:
    saved = served.templates.with_name("saved")
    shutil.copytree(served.templates, saved)
    before = served.generation()
    shutil.rmtree(served.templates)
    wait_until(lambda: served.generation() > before, "a reload after the directory went")
    page = served.get("/m/low-balance/alert/crossed").text
    assert "cannot be read" in page and "Acme Messaging Ltd" in page

    (saved / "low-balance" / "subject.txt").write_text("back again\n")
    saved.rename(served.templates)
    wait_until(lambda: not served.get("/-/status").json()["stale"], "the directory to be read again")
    assert "back again" in served.get("/m/low-balance/alert/crossed").text
    edit(served, served.templates / "low-balance" / "subject.txt", "and watched\n")
    assert "and watched" in served.get("/m/low-balance/alert/crossed").text


# --- the command -----------------------------------------------------------------------------------


def read_line(process: subprocess.Popen[str], timeout: float = WAIT) -> str:
    """The next line the process prints, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            raise AssertionError(f"no output within {timeout}s; stderr: {process.communicate()[1]}")
    return process.stdout.readline()


def test_the_command_serves_and_sigterm_stops_it_promptly_with_a_stream_open(tmp_path: Path) -> None:
    # SIGINT (Ctrl-C) takes the same path (PreviewServer.handle_exit).
    templates = copied_templates(tmp_path)
    env = {**os.environ, "BALANCEWATCH_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-m", "balancewatch", "preview", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(
        [*command, "--templates", str(templates)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(process)
        found = re.fullmatch(
            r"preview: serving (http://127\.0\.0\.1:\d+/) \(templates: (.+)\); Ctrl-C stops\n", line
        )
        assert found and found[2] == str(templates.resolve()), line
        with httpx.stream("GET", found[1] + "events", timeout=WAIT) as response:
            stream = events(response)
            assert next(stream)["event"] == "catalogue"
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=WAIT) == 0
            assert time.monotonic() - started < 3.5
            assert list(stream) == []  # the stream ended with the server
        assert process.stderr is not None and process.stderr.read() == ""
        assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())  # nothing written
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_port_in_use_is_one_line_naming_listen(run: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run("preview", "--listen", listen)
    assert (result.code, result.out) == (1, "")
    [line] = result.err.splitlines()
    assert line.startswith(f"balancewatch preview: --listen {listen}: cannot listen there (")


def test_a_listen_address_that_is_not_host_and_port_is_refused(run: Cli) -> None:
    result = run("preview", "--listen", "8025")
    assert result.code == 1 and "--listen '8025': write HOST:PORT" in result.err


# --- a real account ----------------------------------------------------------------------------------


def test_with_an_account_each_template_shows_its_messages_for_that_account(
    tmp_path: Path, engine: Engine
) -> None:
    now = datetime.now(UTC)
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 50_000, now - timedelta(days=40))
    post(engine, "acme", "USD", -41_000, now - timedelta(days=1))  # $90.00 left
    for site in serve(copied_templates(tmp_path), settings_for(tmp_path), AccountSource(engine, "acme")):
        index = site.get("/").text
        assert "account acme" in index and "/m/low-balance/account/default-ladder-usd" in index
        assert "no rule or report sends template &#39;topup-failed&#39; to account &#39;acme&#39;" in index
        page = site.get("/m/low-balance/account/default-ladder-usd")
        assert page.status_code == 200
        assert "Acme Ltd" in page.text and "$90.00" in page.text and "acme@owner.example" in page.text
        assert site.get("/m/low-balance/account/nosuch").status_code == 404
    assert outbox(engine) == [] and all_states(engine) == []  # read only


def test_a_request_for_another_host_name_is_refused(served: Served) -> None:
    port = served.url.rsplit(":", 1)[1].strip("/")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.get(served.url, headers={"Host": host}, timeout=WAIT).status_code == 200, host
    rebound = httpx.get(served.url + "-/status", headers={"Host": f"attacker.example:{port}"}, timeout=WAIT)
    assert rebound.status_code == 400 and "localhost" in rebound.text


def test_account_data_is_never_served_beyond_this_machine(run: Cli) -> None:
    result = run("preview", "--listen", "0.0.0.0:0", "--account", "acme")
    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines() == [
        "balancewatch preview: --listen 0.0.0.0:0: --account shows customers' data; "
        "serve it on 127.0.0.1 only"
    ]


def test_a_database_out_of_reach_leaves_the_samples_served_and_says_why(tmp_path: Path) -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/test?connect_timeout=2")
    for site in serve(copied_templates(tmp_path), settings_for(tmp_path), AccountSource(unreachable, "acme")):
        index = site.get("/")
        assert index.status_code == 200 and "/m/low-balance/alert/crossed" in index.text
        assert "the database cannot be read now:" in index.text
        assert site.get("/m/low-balance/alert/crossed").status_code == 200


def test_an_email_of_a_template_with_any_name_downloads(tmp_path: Path) -> None:
    templates = copied_templates(tmp_path)
    shutil.copytree(templates / "low-balance", templates / '残高 "alert"')
    for site in serve(templates, settings_for(tmp_path)):
        path = "/eml/" + quote('残高 "alert"', safe="") + "/alert/crossed"
        response = site.get(path)
        assert response.status_code == 200
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="') and "filename*=UTF-8''" in disposition
        assert email.message_from_bytes(response.content, policy=email.policy.default)["Subject"]


def test_a_page_and_its_frames_share_one_render_of_a_catalogue(served: Served) -> None:
    catalogue = served.studio.snapshot.catalogue
    kind, sample = catalogue.find("low-balance")
    first = catalogue.render("low-balance", kind, sample)
    assert catalogue.render("low-balance", kind, sample) is first
    edit(served, served.templates / "low-balance" / "subject.txt", "Edited subject\n")
    again = served.studio.snapshot.catalogue.render("low-balance", kind, sample)
    assert again.rendered is not None and again.rendered.subject == "Edited subject"
