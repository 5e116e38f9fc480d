"""A recipient's copy as it goes on the wire (``EmailEnvelope.wire``: written by ``mime.compose``, or
by the ``email`` package for shapes it leaves alone) is byte for byte what the ``email`` package
writes for ``for_recipient``'s copy, for every shipped email and sample, plain and multipart
messages, attachments, a Reply-To, subjects, bodies and addresses beyond ASCII, long lines, under
either policy; and a server receives exactly those bytes."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email import contentmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancewatch.config import SmtpSettings, load_settings
from balancewatch.deliver import mime, textbody
from balancewatch.deliver.message import POLICY, UTF8_POLICY, EmailEnvelope, build
from balancewatch.deliver.smtp import SmtpTransport
from balancewatch.outbox import Attachment, Claimed, message_id
from balancewatch.tools.studio.catalogue import Catalogue
from tests.smtpserver import SmtpServer

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
LONG = "A sender whose display name goes on and on and far past one line of seventy-eight"


def row(
    recipients: tuple[str, ...],
    *,
    sender: str = "Alerts <alerts@platform.example>",
    subject: str = "Low balance: $90.00 left",
    html: str | None = "<p>Your balance is <b>$90.00</b>.</p>",
    attachments: tuple[Attachment, ...] = (),
) -> Claimed:
    return Claimed(
        1,
        "alert:acme:USD:1",
        "<alert.1@platform.example>",
        sender,
        recipients,
        subject,
        "Your balance is $90.00.\nTop up soon.\n",
        html,
        1,
        NOW,
        attachments,
    )


CASES = {
    "text and html": row(("owner@acme.example", "finance@platform.example")),
    "text only": row(("owner@acme.example",), html=None),
    "attachment": row(
        ("owner@acme.example",),
        attachments=(Attachment("usage.csv", "text/csv", "day,usd\n2026-03-01,9.00\n"),),
    ),
    "long lines and 8bit": row(
        ("owner@acme.example",),
        subject="x" * 300,
        html="<p>" + "é" * 50 + "</p>\n" + "<td>" + "w " * 200 + "</td>\n" * 12,
    ),
    "empty bodies": row(("owner@acme.example",), html=""),
    "beyond ascii": row(
        ("jörg@acme.example", "owner@bücher.example"),
        sender=f"Plateforme Frédéric — {LONG} <alerts@platform.example>",
        subject="Solde bas : 0,20 € restants — rechargez dès maintenant, s'il vous plaît " * 2,
        html="<p>Solde : <b>0,20 €</b></p>",
    ),
}


def shipped() -> list[Claimed]:
    """Every shipped template with every sample, rendered as a producer writes it to the outbox."""
    catalogue = Catalogue.load(load_settings(environ={}, search=()))
    rows = []
    for i, (template, kind, sample) in enumerate(catalogue.entries()):
        rendered = catalogue.render(template, kind, sample).rendered
        assert rendered is not None
        key = f"{template}/{kind}/{sample.name}"
        rows.append(
            Claimed(
                i,
                key,
                message_id(key, "platform.example"),
                "alerts@platform.example",
                ("owner@acme.example",),
                rendered.subject,
                rendered.text,
                rendered.html,
                1,
                NOW,
            )
        )
    return rows


def assert_same_bytes(message: Claimed, reply_to: str = "") -> None:
    """Each copy of ``message`` on the wire, under either policy, is what the email package writes."""
    envelope = build(message, NOW, reply_to=reply_to)
    for utf8 in (False, True):
        policy = UTF8_POLICY if utf8 else POLICY
        for recipient in envelope.recipients:
            wire = envelope.wire(recipient, utf8)
            assert wire == envelope.for_recipient(recipient).as_bytes(policy=policy)
            parsed = email.message_from_bytes(wire, policy=email.policy.default)
            assert parsed.get_all("To") == [recipient]
            assert parsed["Message-ID"] == message.message_id
    assert envelope.message["To"] is None


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_copy_on_the_wire_is_the_copy_for_recipient_writes(case: str) -> None:
    assert_same_bytes(CASES[case], reply_to="support@platform.example")
    assert_same_bytes(CASES[case])
    headers = build(CASES[case], NOW, reply_to="s@platform.example").wire(CASES[case].recipients[0])
    names = [name for name, _ in email.message_from_bytes(headers).items()]
    assert names[:4] == ["From", "Reply-To", "To", "Subject"]


def test_every_shipped_email_goes_on_the_wire_as_the_email_package_writes_it() -> None:
    rows = shipped()
    assert len(rows) > 20
    for message in rows:
        assert_same_bytes(message)
    composed = [mime.compose(r, r.subject, "Sun, 01 Mar 2026 09:30:00 +0000", "", POLICY) for r in rows]
    assert all(c is not None for c in composed)  # the email package writes none of them


def test_addresses_and_ids_the_email_package_writes_as_given_are_written_so() -> None:
    atext = "!#$%&'*+/=?^_`{|}~-"
    addresses = [f"a{c}b@x.example" for c in atext] + ["a.b.c@sub.x-y.example", "A1@X.EXAMPLE"]
    addresses += ["o" * 70 + "@x.example", "o" * 60 + "@x.example", '"q"@x.example', "a..b@x.example"]
    for address in addresses:
        name, parsed = POLICY.header_store_parse("To", address)
        assert mime.to_field(POLICY, address) == POLICY.fold_binary(name, parsed), address
    ids = ["<a.b@c.d>", "<" + "f" * 32 + "@platform.example>", "<" + "f" * 70 + "@x.example>", "<a..b@x>"]
    for value in ids:
        message = row(("owner@acme.example",), html=None)
        message = Claimed(*[value if f == "message_id" else getattr(message, f) for f in FIELDS])
        assert_same_bytes(message)


FIELDS = Claimed.__slots__


@pytest.mark.parametrize(
    "message",
    [CASES["attachment"], row(("owner@acme.example",), html="--===============1==\n<p>x</p>")],
    ids=["attachment", "a line like a boundary"],
)
def test_what_compose_leaves_alone_the_email_package_writes(message: Claimed) -> None:
    assert mime.compose(message, message.subject, "d", "", POLICY) is None
    assert_same_bytes(message)


def test_a_copy_for_anyone_else_is_refused() -> None:
    envelope = build(CASES["text only"], NOW)
    with pytest.raises(ValueError, match="not a recipient"):
        envelope.wire("ops@platform.example")


def test_the_envelope_sender_is_the_from_address() -> None:
    assert build(CASES["beyond ascii"], NOW).sender == "alerts@platform.example"


def test_the_server_receives_each_copy_byte_for_byte(smtp_server: SmtpServer) -> None:
    envelopes: list[EmailEnvelope] = [build(CASES[case], NOW) for case in sorted(CASES)]
    settings = SmtpSettings(host=smtp_server.host, port=smtp_server.port, security="none")
    with SmtpTransport(settings, None) as transport:
        for envelope in envelopes:
            assert transport.send(envelope) == {}
    got = smtp_server.wait_for(sum(len(e.recipients) for e in envelopes))
    sent = [
        ("alerts@platform.example", (r,), e.wire(r, not r.isascii())) for e in envelopes for r in e.recipients
    ]
    assert [(m.mail_from, m.rcpt_tos, m.data) for m in got] == sent


BODIES = [
    "",
    "\n",
    "short\n",
    "no newline at the end",
    "é" * 100,
    "x" * 79 + "\n",
    "a line ending in a space " + "y" * 60 + " \n" + "tab\t\n",
    "=" * 200,
    " " * 77 + "\t",
    "\r\nmixed\rline\x0bends\x0c\x1c\x85\u2028 and =3D\n" * 12,
    "€ 0,20 — ünïcödé " * 30,
    "\x00\x01 control characters \x7f\n",
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_text_bodies_are_encoded_as_set_content_encodes_them(body: str) -> None:
    for policy in (POLICY, UTF8_POLICY, email.policy.SMTP):
        assert textbody.encode_text(body, policy) == contentmanager._encode_text(body, "utf-8", None, policy)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*" \t\r\n=.éx€\x85-", "word ", "y" * 30]), max_size=200).map("".join))
def test_any_text_body_is_encoded_as_set_content_encodes_it(body: str) -> None:
    assert textbody.encode_text(body, POLICY) == contentmanager._encode_text(body, "utf-8", None, POLICY)
