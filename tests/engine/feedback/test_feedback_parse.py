"""Parsing what comes back: DSNs, plain-text bounces, ARF reports and ESP webhooks.

The fixtures are hand-written after RFC 3464 (appendix examples), RFC 5965 (appendix B) and
the SES, SendGrid and Postmark documentation, adapted to mail this engine sent: envelope
sender ``bounce+<intent_id>@bounces.shop.example``, Message-ID ``<intent_id@shop.example>``.
"""

from __future__ import annotations

import json

import pytest

from engine.feedback import (
    MAX_REPORT_BYTES,
    Bounce,
    Complaint,
    FeedbackInvalid,
    intent_from_address,
    intent_from_message_id,
    parse_mail,
)
from engine.feedback.arf import parse_arf
from engine.feedback.dsn import parse_dsn
from engine.feedback.webhooks import parse_postmark, parse_sendgrid, parse_ses, parse_webhook

INTENT = "0193b2c4d5e6f708192a3b4c5d6e7f80"
OTHER = "0193b2c4d5e6f708192a3b4c5d6e7f81"


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


ORIGINAL_HEADERS = f"""\
Return-Path: <bounce+{INTENT}@bounces.shop.example>
From: Shop <news@shop.example>
To: Ann <ann@example.org>
Subject: Your cart is waiting
Date: Tue, 07 May 2024 12:00:00 +0000
Message-ID: <{INTENT}@shop.example>
MIME-Version: 1.0
"""

DSN = crlf(f"""\
Return-Path: <>
Received: from mx.example.org by mail.bounces.shop.example; Tue, 07 May 2024 12:00:05 +0000
Date: Tue, 07 May 2024 12:00:04 +0000
From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: bounce+{INTENT}@bounces.shop.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <20240507120004.1A2B3C4D5E@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
    boundary="RAA14128.773615765/mx.example.org"

--RAA14128.773615765/mx.example.org
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<ann@example.org>: host mx.example.org[192.0.2.10] said: 550 5.1.1 <ann@example.org>:
    Recipient address rejected: User unknown in virtual mailbox table

--RAA14128.773615765/mx.example.org
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 1A2B3C4D5E
Arrival-Date: Tue, 07 May 2024 12:00:01 +0000

Final-Recipient: rfc822; ann@example.org
Original-Recipient: rfc822;ann@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected:
    User unknown in virtual mailbox table

Final-Recipient: rfc822; Bob@Example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; 451 4.4.1 Connection timed out
Will-Retry-Until: Thu, 09 May 2024 12:00:01 +0000

--RAA14128.773615765/mx.example.org
Content-Type: text/rfc822-headers

{ORIGINAL_HEADERS}
--RAA14128.773615765/mx.example.org--
""")

# RFC 3464 style, forwarded to a catch-all: the report's own recipient says nothing, the
# included original message (message/rfc822) carries our Message-ID.
DSN_RFC822_ONLY = crlf(f"""\
From: postmaster@relay.example.net
To: postmaster@shop.example
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type="delivery-status"; boundary="b1"

--b1
Content-Type: text/plain

Delivery failed.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net

Final-Recipient: rfc822; <carl@example.net>
Action: failed
Status: 5.2.2 (mailbox full)
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full

--b1
Content-Type: message/rfc822

From: Shop <news@shop.example>
To: carl@example.net
Subject: Hello
Message-ID: <{OTHER}@shop.example>

Hi Carl.

--b1--
""")

TEXT_BOUNCE = crlf(f"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounce+{INTENT}@bounces.shop.example
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=UTF-8

Delivery to the following recipient failed permanently:

     dana@gmail.example

Technical details of permanent failure:
The email account that you tried to reach does not exist. Please try double-checking the
recipient's email address for typos or unnecessary spaces.
550 5.1.1 https://support.google.com/mail/?p=NoSuchUser

----- Original message -----

Message-ID: <{INTENT}@shop.example>
Subject: Your cart is waiting
""")

ARF = crlf(f"""\
From: <abuse@mail.example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: Earn money
To: <fbl@bounces.shop.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.  For more information
about this format please see http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounce+{INTENT}@bounces.shop.example>
Original-Rcpt-To: <Ann@example.org>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com;
               spf=fail smtp.mail=somespammer@example.com
Reported-Domain: shop.example

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

{ORIGINAL_HEADERS}
Buy now!

--part1_13d.2e68ed54_boundary--
""")

# A provider that redacts the recipient and the envelope: only the Message-ID is left.
ARF_REDACTED = crlf(f"""\
From: fbl@provider.example
To: fbl@bounces.shop.example
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="x"

--x
Content-Type: text/plain

A complaint.

--x
Content-Type: message/feedback-report

Feedback-Type: fraud
User-Agent: Provider-FBL/2.1
Version: 1

--x
Content-Type: text/rfc822-headers

From: Shop <news@shop.example>
To: xxxxxxxx@example.org
Message-ID: <{OTHER}@shop.example>

--x--
""")

SES_MESSAGE = {
    "notificationType": "Bounce",
    "bounce": {
        "feedbackId": "0100018f4b9c3a1e-5d1e2f3a-aaaa-bbbb-cccc-000000000000-000000",
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "ann@example.org",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2024-05-07T12:00:05.000Z",
        "remoteMtaIp": "192.0.2.10",
        "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
    },
    "mail": {
        "timestamp": "2024-05-07T12:00:00.000Z",
        "source": f"bounce+{INTENT}@bounces.shop.example",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/shop.example",
        "messageId": "0100018f4b9c39f8-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee-000000",
        "destination": ["ann@example.org"],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "Shop <news@shop.example>"},
            {"name": "Message-ID", "value": f"<{INTENT}@shop.example>"},
        ],
        "commonHeaders": {"messageId": f"<{INTENT}@shop.example>", "subject": "Cart"},
    },
}


def sns(message: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-feedback",
            "Message": json.dumps(message),
            "Timestamp": "2024-05-07T12:00:06.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+..",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        }
    ).encode()


SES_COMPLAINT = {
    "notificationType": "Complaint",
    "complaint": {
        "userAgent": "AnyCompany Feedback Loop (V0.01)",
        "complainedRecipients": [{"emailAddress": "ann@example.org"}],
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2024-05-07T12:00:00.000Z",
        "timestamp": "2024-05-07T13:00:00.000Z",
        "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
    },
    "mail": {
        "source": "news@shop.example",
        "messageId": "0100018f4b9c39f8-aaaa",
        "commonHeaders": {"messageId": f"<{OTHER}@shop.example>"},
    },
}

SENDGRID = json.dumps(
    [
        {
            "email": "ann@example.org",
            "timestamp": 1715083205,
            "smtp-id": f"<{INTENT}@shop.example>",
            "event": "bounce",
            "category": ["cart"],
            "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "reason": "500 unknown recipient",
            "status": "5.0.0",
            "type": "bounce",
            "intent_id": INTENT,
        },
        {
            "email": "bob@example.org",
            "timestamp": 1715083206,
            "event": "delivered",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.1",
        },
        {
            "email": "carl@example.net",
            "timestamp": 1715083207,
            "smtp-id": f"<{OTHER}@shop.example>",
            "event": "bounce",
            "reason": "421 try again later",
            "status": "4.0.0",
            "type": "blocked",
        },
        {
            "email": "dana@example.com",
            "timestamp": 1715083208,
            "event": "spamreport",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.2",
            "intent_id": OTHER,
        },
    ]
).encode()

POSTMARK_BOUNCE = json.dumps(
    {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "cart",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"intent_id": INTENT},
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "Ann@Example.org",
        "From": "news@shop.example",
        "BouncedAt": "2024-05-07T12:00:05Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Your cart",
    }
).encode()

POSTMARK_SPAM = json.dumps(
    {
        "RecordType": "SpamComplaint",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "MessageID": f"<{OTHER}@shop.example>",
        "Email": "dana@example.com",
        "BouncedAt": "2024-05-07T13:00:00Z",
    }
).encode()


# Ids --------------------------------------------------------------------------------------


def test_intent_ids_from_verp_and_message_id() -> None:
    assert intent_from_address(f"<bounce+{INTENT.upper()}@bounces.shop.example>") == INTENT
    assert intent_from_address("bounce+short@bounces.shop.example") is None
    assert intent_from_message_id(f"<{INTENT}@shop.example>") == INTENT
    assert intent_from_message_id("<CAF=abc@mail.gmail.com>") is None
    assert intent_from_message_id(None) is None


# DSN ----------------------------------------------------------------------------------------


def test_dsn_per_recipient() -> None:
    hard, delayed = parse_dsn(DSN)
    assert hard == Bounce(
        intent_id=INTENT,
        recipient="ann@example.org",
        action="failed",
        status="5.1.1",
        diagnostic="550 5.1.1 <ann@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
        hard=True,
        source="dsn",
    )
    assert delayed.recipient == "bob@example.org"
    assert (delayed.action, delayed.status, delayed.hard) == ("delayed", "4.4.1", False)


def test_dsn_intent_from_envelope_recipient_and_original_message() -> None:
    (bounce,) = parse_dsn(DSN_RFC822_ONLY)
    assert bounce.intent_id == OTHER  # from the included message's Message-ID
    assert (bounce.recipient, bounce.status, bounce.hard) == ("carl@example.net", "5.2.2", True)
    # The envelope recipient (RCPT TO of the report) wins over the headers.
    (bounce,) = parse_dsn(
        DSN_RFC822_ONLY, envelope_recipient=f"bounce+{INTENT}@bounces.shop.example"
    )
    assert bounce.intent_id == INTENT


def test_plain_text_bounce_best_effort() -> None:
    (bounce,) = parse_dsn(TEXT_BOUNCE)
    assert bounce.intent_id == INTENT
    assert bounce.recipient == "dana@gmail.example"
    assert (bounce.action, bounce.status, bounce.hard, bounce.source) == (
        "failed",
        "5.1.1",
        True,
        "text",
    )
    assert "5.1.1" in bounce.diagnostic


def test_parse_mail_dispatches() -> None:
    assert [type(i) for i in parse_mail(DSN)] == [Bounce, Bounce]
    assert [type(i) for i in parse_mail(ARF)] == [Complaint]
    assert [type(i) for i in parse_mail(TEXT_BOUNCE)] == [Bounce]


# ARF ----------------------------------------------------------------------------------------


def test_arf_complaint() -> None:
    complaint = parse_arf(ARF)
    assert complaint.intent_id == INTENT
    assert complaint.recipient == "ann@example.org"
    assert complaint.feedback_type == "abuse"
    assert complaint.user_agent == "SomeGenerator/1.0"
    assert complaint.arrival_date == 1110304800.0  # 8 Mar 2005 14:00 EDT = 18:00 UTC


def test_arf_redacted_recipient_uses_message_id() -> None:
    complaint = parse_arf(ARF_REDACTED)
    assert complaint.intent_id == OTHER
    assert complaint.recipient is None
    assert complaint.feedback_type == "fraud"
    assert complaint.arrival_date is None


# Webhooks -----------------------------------------------------------------------------------


def test_ses_bounce_and_complaint() -> None:
    (bounce,) = parse_webhook(sns(SES_MESSAGE))
    assert bounce == Bounce(
        INTENT, "ann@example.org", "failed", "5.1.1", "smtp; 550 5.1.1 user unknown", True, "ses"
    )
    transient = json.loads(json.dumps(SES_MESSAGE))
    transient["bounce"]["bounceType"] = "Transient"
    del transient["bounce"]["bouncedRecipients"][0]["status"]
    del transient["bounce"]["bouncedRecipients"][0]["action"]
    (soft,) = parse_ses(sns(transient))
    assert (soft.hard, soft.action, soft.status) == (False, "delayed", "4.0.0")
    (complaint,) = parse_webhook(sns(SES_COMPLAINT))
    assert isinstance(complaint, Complaint)
    assert complaint.intent_id == OTHER  # no VERP in mail.source: the Message-ID
    assert complaint.recipient == "ann@example.org"
    assert complaint.feedback_type == "abuse"
    assert complaint.arrival_date == 1715083200.0
    # The bare SES notification (no SNS envelope) is accepted too.
    assert parse_ses(json.dumps(SES_MESSAGE))[0] == bounce


def test_sendgrid_events() -> None:
    items = parse_webhook(SENDGRID)
    assert len(items) == 3  # "delivered" gives nothing
    hard, blocked, spam = items
    assert isinstance(hard, Bounce) and hard.hard and hard.intent_id == INTENT
    assert (hard.recipient, hard.status, hard.diagnostic) == (
        "ann@example.org",
        "5.0.0",
        "500 unknown recipient",
    )
    assert isinstance(blocked, Bounce) and not blocked.hard and blocked.intent_id == OTHER
    assert isinstance(spam, Complaint) and spam.intent_id == OTHER
    assert spam.recipient == "dana@example.com" and spam.arrival_date == 1715083208.0
    assert parse_sendgrid(SENDGRID) == items


def test_postmark_bounce_and_complaint() -> None:
    (bounce,) = parse_webhook(POSTMARK_BOUNCE)
    assert isinstance(bounce, Bounce)
    assert (bounce.intent_id, bounce.recipient, bounce.status, bounce.hard) == (
        INTENT,
        "ann@example.org",
        "5.1.1",
        True,
    )
    assert bounce.diagnostic.startswith("The server was unable")
    soft = json.loads(POSTMARK_BOUNCE)
    soft.update(Type="SoftBounce", Details="mailbox temporarily unavailable", Metadata={})
    (bounce,) = parse_postmark(json.dumps(soft))
    assert (bounce.intent_id, bounce.hard, bounce.status) == (None, False, "4.0.0")
    (complaint,) = parse_webhook(POSTMARK_SPAM)
    assert isinstance(complaint, Complaint) and complaint.intent_id == OTHER


# Hostile and unknown input -----------------------------------------------------------------


def test_unknown_webhook_formats_name_what_is_missing() -> None:
    with pytest.raises(FeedbackInvalid, match="unknown format"):
        parse_webhook(b'{"hello": "world"}')
    with pytest.raises(FeedbackInvalid, match="not JSON"):
        parse_webhook(b"{nope")
    with pytest.raises(FeedbackInvalid, match=r"bouncedRecipients missing"):
        parse_ses(sns({**SES_MESSAGE, "bounce": {"bounceType": "Permanent"}}))
    with pytest.raises(FeedbackInvalid, match=r"mail: missing"):
        parse_ses(sns({"notificationType": "Bounce"}))
    with pytest.raises(FeedbackInvalid, match="SubscriptionConfirmation"):
        parse_ses(b'{"Type": "SubscriptionConfirmation", "SubscribeURL": "https://x"}')
    with pytest.raises(FeedbackInvalid, match=r"event 0: email: missing"):
        parse_sendgrid(b'[{"event": "bounce"}]')
    with pytest.raises(FeedbackInvalid, match="Postmark webhook: Email"):
        parse_postmark(b'{"RecordType": "Bounce", "Type": "HardBounce"}')
    assert issubclass(FeedbackInvalid, ValueError)


def test_report_with_no_parts() -> None:
    empty = crlf(
        "From: a@example.org\nTo: bounce+x@b.example\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="z"\n\n'
    )
    with pytest.raises(FeedbackInvalid, match="no parts"):
        parse_dsn(empty)
    with pytest.raises(FeedbackInvalid, match="no parts"):
        parse_arf(empty.replace(b"delivery-status", b"feedback-report"))
    with pytest.raises(FeedbackInvalid, match="no header fields"):
        parse_mail(b"just some text without headers")
    with pytest.raises(FeedbackInvalid, match="empty"):
        parse_mail(b"   ")
    with pytest.raises(FeedbackInvalid, match="not a delivery status report"):
        parse_dsn(crlf("From: a@example.org\nSubject: hello\n\nHow are you?\n"))
    with pytest.raises(FeedbackInvalid, match="no message/feedback-report part"):
        parse_arf(ARF.replace(b"message/feedback-report", b"text/plain"))
    with pytest.raises(FeedbackInvalid, match="missing Status"):
        parse_dsn(DSN.replace(b"Status: 5.1.1\r\n", b""))
    with pytest.raises(FeedbackInvalid, match="Action 'exploded'"):
        parse_dsn(DSN.replace(b"Action: failed", b"Action: exploded"))


def test_oversized_bodies_are_refused() -> None:
    huge = DSN + b"X" * (10 * 1024 * 1024)
    assert len(huge) > MAX_REPORT_BYTES
    with pytest.raises(FeedbackInvalid, match="over the"):
        parse_mail(huge)
    with pytest.raises(FeedbackInvalid, match="over the"):
        parse_dsn(huge)
    with pytest.raises(FeedbackInvalid, match="over the"):
        parse_webhook(b"[" + b" " * (10 * 1024 * 1024) + b"]")


def test_header_injection_in_recipient() -> None:
    with pytest.raises(FeedbackInvalid, match="control characters"):
        parse_sendgrid(
            json.dumps(
                [{"event": "bounce", "email": "ann@example.org\r\nBcc: all@example.org"}]
            ).encode()
        )
    with pytest.raises(FeedbackInvalid, match="not an email address"):
        parse_dsn(
            DSN.replace(
                b"Final-Recipient: rfc822; ann@example.org",
                b"Final-Recipient: rfc822; ann@example.org, Bcc: all@example.org",
            )
        )
    postmark = json.loads(POSTMARK_BOUNCE)
    postmark["Email"] = "ann@example.org\nX-Injected: 1"
    with pytest.raises(FeedbackInvalid, match="control characters"):
        parse_postmark(json.dumps(postmark))
