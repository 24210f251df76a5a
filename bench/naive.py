"""The naive baseline the benchmark compares against, measured in the same run.

What a first, straightforward implementation would do: pull one event at a time, a commit per
row, the standard library's ``email.message`` to build MIME, and one SMTP connection with one
round trip per command. Rendering is cached Jinja2, the same as the engine, so the comparison
is about the pipeline, not the template engine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2
import orjson

from engine import bus

SUBJECT = "Your order {{ properties.order_id }} is confirmed"
BODY = """<html><body><h1>Thanks, {{ traits.first_name or 'there' }}!</h1>
<p>Order {{ properties.order_id }}: {{ properties.total }} {{ properties.currency }}</p>
<ul>{% for p in properties.products or [] %}
<li>{{ p.name }} x {{ p.quantity }}</li>{% endfor %}</ul>
</body></html>"""


async def run_naive(
    nats_url: str,
    token: str,
    smtp: tuple[str, int],
    db_path: Path,
    stop: asyncio.Event,
    latencies: list[float],
    until: float = float("inf"),
) -> int:
    """Consume EVENTS until ``stop`` is set and the stream is drained, or the monotonic
    deadline ``until`` passes (a baseline that cannot keep up would take minutes to drain);
    returns emails sent."""
    nc = await bus.connect(nats_url, token=token, name="naive")
    js = nc.jetstream()
    sub = await js.pull_subscribe("events.>", durable="naive", stream=bus.EVENTS_STREAM)
    db = sqlite3.connect(db_path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS sends (id TEXT PRIMARY KEY, to_addr TEXT, status TEXT, "
        "created_at REAL, sent_at REAL)"
    )
    env = jinja2.Environment(autoescape=True)
    subject_t, body_t = env.from_string(SUBJECT), env.from_string(BODY)
    client = aiosmtplib.SMTP(hostname=smtp[0], port=smtp[1], start_tls=False)
    await client.connect()
    sent = 0
    try:
        while time.monotonic() < until:
            try:
                msgs = await sub.fetch(1, timeout=0.5)
            except TimeoutError:
                if stop.is_set():
                    break
                continue
            for msg in msgs:
                event: dict[str, Any] = orjson.loads(msg.data)
                if event.get("event") != "Order Completed":
                    await msg.ack()
                    continue
                props = event.get("properties") or {}
                traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
                to = traits.get("email") or f"{event.get('userId')}@example.com"
                db.execute(
                    "INSERT OR IGNORE INTO sends VALUES (?, ?, 'queued', ?, NULL)",
                    (event["messageId"], to, time.time()),
                )
                db.commit()
                message = EmailMessage()
                message["From"] = "Demo Shop <shop@shop.example>"
                message["To"] = to
                message["Subject"] = subject_t.render(properties=props)
                message["Date"] = formatdate(localtime=False)
                message["Message-ID"] = make_msgid(domain="shop.example")
                message.set_content("Your order is confirmed.")
                message.add_alternative(
                    body_t.render(properties=props, traits=traits), subtype="html"
                )
                await client.send_message(message)
                db.execute(
                    "UPDATE sends SET status='sent', sent_at=? WHERE id=?",
                    (time.time(), event["messageId"]),
                )
                db.commit()
                if "bench_sent_at" in props:
                    latencies.append(time.time() - float(props["bench_sent_at"]))
                sent += 1
                await msg.ack()
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            pass
        db.close()
        await nc.drain()
    return sent
