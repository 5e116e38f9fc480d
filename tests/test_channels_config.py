"""Named channels in the config and in rules: secrets from their sources, never shown; every
reference checked with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.config import load_settings
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.runtime.loadset import load_set
from tests.test_config import config_file, problems

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CHANNELS = """\
channels:
  ops-chat:
    type: chat
    url: json://hooks.example/room?token=chat-token-1234
    rate: 1
  platform:
    type: webhook
    url: https://platform.example/hooks/balances?key=query-token
    secret_env: PLATFORM_SECRET
    headers: {Authorization: Bearer header-token}
  finance:
    type: email
    to: [finance@example.com]
"""


def test_each_secret_is_read_from_its_source(tmp_path: Path) -> None:
    (tmp_path / "chat-url").write_text("json://127.0.0.1:9/from-file\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "channel-hook").write_text(SECRET + "\n")
    path = config_file(
        tmp_path,
        "channels:\n"
        "  room: {type: chat, url_file: chat-url}\n"
        "  hook: {type: webhook, url: 'https://h.example/'}\n"
        "  env-hook: {type: webhook, url: 'https://h.example/', secret_env: S}\n",
    )
    settings = load_settings(path, {"S": SECRET, "CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.channel_secret("room") == "json://127.0.0.1:9/from-file"
    assert settings.channel_secret("hook") == SECRET  # the systemd credential channel-hook
    assert settings.channel_secret("env-hook") == SECRET


def test_a_missing_or_malformed_secret_is_a_problem_at_its_channel(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        "channels:\n"
        "  no-secret: {type: webhook, url: 'https://h.example/'}\n"
        "  bad-secret:\n"
        "    type: webhook\n"
        "    url: 'https://h.example/'\n"
        "    secret: not-a-standard-webhooks-secret\n"
        "  unset-var: {type: chat, url_env: NOT_SET}\n",
    )
    found = problems(path, {})
    assert found == [
        f"{path}:2: channels.no-secret: no secret: set secret, secret_env or secret_file, or the "
        "systemd credential channel-no-secret",
        f"{path}:6: channels.bad-secret.secret: the signing secret must start with whsec_; write whsec_ "
        "followed by base64 of 32 random bytes, e.g. `echo whsec_$(openssl rand -base64 32)`",
        f"{path}:7: channels.unset-var: url_env: the variable NOT_SET is not set",
    ]
    assert not any("not-a-standard" in line for line in found)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("email: {type: email, to: [a@example.com]}", "'email' is the daemon's own email channel"),
        ("Ops: {type: email, to: [a@example.com]}", "'Ops' is not a channel name"),
        ("a-very-long-channel-name: {type: email, to: [a@example.com]}", "at most 16 characters"),
        ("x: {type: pager, url: 'https://p.example/'}", "type"),
        (
            "x: {type: webhook, url: 'https://p.example/', secret: " + SECRET + ", headers: {webhook-id: a}}",
            "set by balancewatch itself",
        ),
        ("x: {type: webhook, url: 'http://p.example/', secret: " + SECRET + "}", "use https://"),
    ],
)
def test_a_bad_channel_is_refused_at_load(tmp_path: Path, entry: str, message: str) -> None:
    path = config_file(tmp_path, f"channels:\n  {entry}\n")
    found = problems(path, {})
    assert len(found) == 1 and found[0].startswith(f"{path}:2: channels.")
    assert message in found[0]


def test_config_show_masks_every_channel_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(tmp_path, CHANNELS)
    environ = {"PLATFORM_SECRET": SECRET, "BALANCEWATCH_CONFIG": str(path)}
    assert main(["config", "show"], environ) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)["channels"]
    for secret in ("chat-token-1234", "query-token", "header-token", SECRET):
        assert secret not in out
    assert shown["platform"]["url"] == "https://platform.example/hooks/balances?********"
    assert shown["finance"]["to"] == ["finance@example.com"]


def rules_file(directory: Path, notify: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "rules.yaml"
    path.write_text(f"alerts:\n  - id: low\n    below: {{USD: [10]}}\n    notify:\n{notify}")
    return path


def test_rules_name_channels_that_check_finds_in_the_config(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules_file(rules, "      - owner\n      - channel:ops-chat\n      - channel:platform\n")
    live = load_set(rules, shipped.templates_dir(), channels=("ops-chat", "platform"))
    assert live.rules[0].channels == ("ops-chat", "platform")
    assert live.rules[0].recipients == ()
    assert live.rules[0].notify_owner


def test_a_channel_the_config_lacks_is_a_problem_at_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    path = rules_file(rules, "      - owner\n      - channel:ops-chta\n")
    with pytest.raises(ProblemsError) as caught:
        load_set(rules, shipped.templates_dir(), channels=("ops-chat",))
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:6: notify: channel 'ops-chta' is not in the config; did you mean channel:ops-chat? "
        "(channels: ops-chat)"
    ]


def test_check_reports_a_report_naming_an_unknown_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "reports.yaml").write_text(
        "reports:\n  - id: monthly\n    schedule: monthly\n    contents: usage\n"
        "    notify: owner, channel:nowhere\n"
    )
    path = config_file(tmp_path, f"rules_dir: {rules}\nstate_dir: {tmp_path / 'state'}\n")
    assert main(["check"], {"BALANCEWATCH_CONFIG": str(path)}) == 1
    err = capsys.readouterr().err
    assert (
        f"{rules / 'reports.yaml'}:5: notify: channel 'nowhere' is not in the config; "
        "(channels: none: add a channels: section to config.yaml)" in err
    )


@pytest.mark.parametrize("written", ["channel:", "channel:Ops", "channel:a b"])
def test_a_malformed_channel_reference_is_refused(tmp_path: Path, written: str) -> None:
    rules = tmp_path / "rules"
    path = rules_file(rules, f"      - '{written}'\n")
    with pytest.raises(ProblemsError) as caught:
        load_set(rules, shipped.templates_dir())
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{path}:5: alerts[0].notify[0]: ")
    assert "does not name a channel" in problem.message


def test_check_refuses_a_chat_url_apprise_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(
        tmp_path,
        f"state_dir: {tmp_path / 'state'}\n"
        "channels:\n  room: {type: chat, url: 'nosuchservice://user:hunter2@host/secret-path'}\n",
    )
    assert main(["check"], {"BALANCEWATCH_CONFIG": str(path)}) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: channels.room: " in err
    assert "hunter2" not in err and "secret-path" not in err


def test_every_shipped_template_has_a_chat_message_for_each_of_its_samples() -> None:
    from balancewatch.render.templates import load_templates
    from balancewatch.runtime.loadset import SAMPLES

    templates = load_templates(shipped.templates_dir())
    uses = {
        "low-balance": "alert",
        "runway": "alert",
        "recommended-threshold": "alert",
        "balance-restored": "restored",
        "topup-failed": "topup-failed",
        "usage-report": "report-usage",
        "daywise-report": "report-daywise",
        "transactions-report": "report-transactions",
        "low-balance-report": "report-low-balance",
    }
    assert set(uses) == set(templates.names)
    for name, kind in uses.items():
        for sample in SAMPLES[kind]():
            rendered = templates.render(name, sample.context, chat=True)
            assert rendered.chat is not None
            first, *rest = rendered.chat.splitlines()
            assert first == rendered.subject, (name, sample.name)
            assert rest and "None" not in rendered.chat, (name, sample.name, rendered.chat)


def test_render_prints_the_chat_message_a_designer_edits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "low-balance", "--sample", "crossed", "--part", "chat"], {}) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == "Acme Messaging Ltd: USD balance $84.12 is below $100.00"
    assert second.startswith("Acme Messaging Ltd (acme-42) · $84.12")
