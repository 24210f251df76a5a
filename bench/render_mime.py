"""Micro-benchmark of the send hot path: cached render of each starter email, then MIME build.

Run from the repository root::

    .venv/bin/python -m bench.render_mime [--iterations 20000]

Prints median and p99 per operation in microseconds, and the stdlib ``email.message`` build of
the same message for comparison (fewer iterations: it is ~50x slower).
"""

from __future__ import annotations

import argparse
import email.policy
import gc
import statistics
import time
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from engine.mime import build_message
from engine.render import RenderedEmail, Renderer, load_template_dir

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "emails"

PRODUCTS = [
    {
        "product_id": "p-1",
        "name": "Everyday Mug",
        "price": 18,
        "quantity": 2,
        "url": "https://northwind.example/p/mug",
        "image_url": "https://cdn.northwind.example/mug.jpg",
    },
    {
        "product_id": "p-2",
        "name": "Linen Apron",
        "price": 38.5,
        "quantity": 1,
        "url": "https://northwind.example/p/apron",
        "image_url": "https://cdn.northwind.example/apron.jpg",
    },
]
PROPERTIES: dict[str, Any] = {
    "order_id": "NW-1001",
    "total": 79.5,
    "subtotal": 74.5,
    "shipping": 5,
    "currency": "USD",
    "products": PRODUCTS,
    "carrier": "UPS",
    "tracking_url": "https://www.ups.example/track?num=1Z999",
    **PRODUCTS[1],
}
CONTEXT: dict[str, Any] = {
    "contact": {"id": "u-1", "email": "jane@example.com", "first_name": "Jane"},
    "traits": {"first_name": "Jane", "last_order_at": "2024-03-02T10:00:00Z"},
    "event": {"name": "Order Completed", "properties": PROPERTIES},
    "properties": PROPERTIES,
    "unsubscribe_url": "https://northwind.example/u/3q2x9f0a.kX1b",
    "shop": {
        "name": "Northwind Goods",
        "url": "https://northwind.example",
        "address": "12 Harbour Lane, Portland, ME 04101, USA",
    },
}
FROM = "Northwind Goods <hello@northwind.example>"
TO = "Jane Doe <jane@example.com>"


def measure(operation: Callable[[], object], iterations: int) -> tuple[float, float]:
    """(median, p99) in microseconds of ``operation`` timed one call at a time."""
    for _ in range(min(iterations // 10, 1000)):
        operation()
    samples = []
    clock = time.perf_counter_ns
    gc.disable()  # a collection landing in one sample says nothing about the operation
    try:
        for _ in range(iterations):
            start = clock()
            operation()
            samples.append(clock() - start)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def build(rendered: RenderedEmail) -> bytes:
    return build_message(
        from_address=FROM,
        to_address=TO,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        message_id="<0190c3a2b7e84c0f9d2e5a6b7c8d9e0f@northwind.example>",
        date=1_714_557_600.0,
        list_unsubscribe_url=CONTEXT["unsubscribe_url"],
        list_unsubscribe_mailto="unsubscribe@northwind.example",
    )


def build_stdlib(rendered: RenderedEmail) -> bytes:
    message = EmailMessage()
    message["From"] = Address("Northwind Goods", addr_spec="hello@northwind.example")
    message["To"] = Address("Jane Doe", addr_spec="jane@example.com")
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(1_714_557_600.0)
    message["Message-ID"] = "<0190c3a2b7e84c0f9d2e5a6b7c8d9e0f@northwind.example>"
    message["List-Unsubscribe"] = f"<{CONTEXT['unsubscribe_url']}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text, cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message.as_bytes(policy=email.policy.SMTP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()
    n = args.iterations

    start = time.perf_counter()
    renderer = Renderer(load_template_dir(TEMPLATES))
    load_ms = (time.perf_counter() - start) * 1000
    ids = sorted(s.id for s in load_template_dir(TEMPLATES))
    print(f"loaded {len(ids)} starter templates (MJML, CSS inlining, compile) in {load_ms:.0f} ms")
    print(f"{n} iterations per operation; microseconds per operation\n")
    print(f"{'operation':40} {'median':>8} {'p99':>8} {'html bytes':>11}")

    renders = {template_id: renderer.render(template_id, CONTEXT) for template_id in ids}
    for template_id in ids:
        median, p99 = measure(lambda t=template_id: renderer.render(t, CONTEXT), n)
        size = len(renders[template_id].html.encode())
        print(f"{'render ' + template_id:40} {median:8.1f} {p99:8.1f} {size:11}")

    print()
    for template_id in ("welcome-1", "abandoned-cart"):
        rendered = renders[template_id]
        median, p99 = measure(lambda r=rendered: build(r), n)
        size = len(build(rendered))
        print(f"{'build_message ' + template_id:40} {median:8.1f} {p99:8.1f} {size:11}")
    for template_id in ("welcome-1", "abandoned-cart"):
        rendered = renders[template_id]
        median, p99 = measure(lambda r=rendered: build_stdlib(r), max(n // 20, 100))
        label = f"stdlib email.message {template_id}"
        print(f"{label:40} {median:8.1f} {p99:8.1f} {len(build_stdlib(rendered)):11}")

    rendered = renders["welcome-1"]
    median, p99 = measure(lambda: build(renderer.render("welcome-1", CONTEXT)), n)
    print(f"\n{'render + build_message welcome-1':40} {median:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()
