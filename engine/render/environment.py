"""The Jinja2 sandbox every email template runs in.

Two environments share one configuration: HTML bodies autoescape, subjects and plain-text parts
do not. Missing data renders as empty text (``LenientUndefined``) so a contact without a
``first_name`` still gets their email, while anything the sandbox forbids raises at once: the
stock sandbox would quietly render ``{{ ''.__class__ }}`` as an empty string, which hides probes.
"""

from __future__ import annotations

import operator
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Results of `*` and `**` larger than this are refused: a template must not be able to
# allocate gigabytes with `'x' * 10**10` on a send worker.
MAX_REPEAT = 100_000
MAX_EXPONENT = 1_000


class LenientUndefined(ChainableUndefined):
    """Missing data renders as ``""``: chained lookups, calls and arithmetic all stay undefined.

    ``ChainableUndefined`` still raises on ``{{ p.price * p.quantity }}`` or
    ``{{ contact.name.upper() }}`` when the data is missing; here those stay undefined too,
    comparisons are false and numeric conversions give zero, so absent traits never fail a send.
    """

    __slots__ = ()

    def _absorb(self, *args: Any, **kwargs: Any) -> LenientUndefined:
        return self

    def _never(self, other: Any) -> bool:
        return False

    # jinja2 types these as returning Never (they raise there); returning is the point here.
    __add__ = __radd__ = __sub__ = __rsub__ = _absorb  # type: ignore[assignment]
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _absorb  # type: ignore[assignment]
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _absorb  # type: ignore[assignment]
    __pow__ = __rpow__ = __pos__ = __neg__ = __call__ = _absorb  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = _never  # type: ignore[assignment]

    def __int__(self) -> int:  # type: ignore[override]
        return 0

    def __float__(self) -> float:  # type: ignore[override]
        return 0.0


def _repeat(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
        if sized and len(seq) * count > MAX_REPEAT:
            raise SecurityError(f"sequence repetition larger than {MAX_REPEAT} items")
    return operator.mul(left, right)


def _power(left: Any, right: Any) -> Any:
    if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
    return operator.pow(left, right)


_DICT_ATTRIBUTES = frozenset(dir(dict))


class EmailSandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox that raises on unsafe access and caps memory-hungry operators.

    ``a.b`` on a dict looks up the key first. Template data is JSON (dicts), so this is both
    faster (no failed attribute lookup per access) and right for a trait named ``items`` or
    ``values``, which stock Jinja would resolve to the dict method.
    """

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                if attribute not in _DICT_ATTRIBUTES:
                    # What the stock lookup ends in, without its two more failed lookups
                    # (an optional field absent from an event: a dozen a message).
                    return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            return _repeat(left, right)
        if operator == "**":
            return _power(left, right)
        return super().call_binop(context, operator, left, right)


# ISO 4217 code -> (symbol, decimals). Codes not listed print as "12.50 CHF".
_CURRENCIES: dict[str, tuple[str, int]] = {
    "USD": ("$", 2),
    "EUR": ("€", 2),
    "GBP": ("£", 2),
    "JPY": ("¥", 0),
    "CAD": ("CA$", 2),
    "AUD": ("A$", 2),
    "INR": ("₹", 2),
    "KRW": ("₩", 0),
}


def _to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or isinstance(value, Undefined):
        return None
    try:
        # Floats through their shortest repr: 2.675 is meant as 2.675, not 2.67499999...
        number = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())
    except (InvalidOperation, TypeError, ValueError):
        return None
    return number if number.is_finite() else None


def money(value: Any, currency: Any = "USD") -> str:
    """Format an amount: ``12.5`` -> ``$12.50``; ``money(1250, "JPY")`` -> ``¥1,250``.

    Unknown currency codes follow the amount (``12.50 CHF``). Values that are not numbers come
    back as their text (``""`` when missing), because shop data is not always clean and a wrong
    price string is better than a failed send.
    """
    try:
        return _money(value, currency)
    except TypeError:  # unhashable, so not a price: a list or a dict
        return str(value)


# Decimal formatting costs a few microseconds and the same prices recur in every email of a
# campaign; typed, so that 1, 1.0 and True stay apart.
@lru_cache(maxsize=4096, typed=True)
def _money(value: Any, currency: Any) -> str:
    amount = _to_decimal(value)
    if amount is None:
        return "" if value is None or isinstance(value, Undefined) else str(value)
    code = str(currency or "USD").strip().upper()
    symbol, decimals = _CURRENCIES.get(code, ("", 2))
    try:
        rounded = abs(amount).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than Decimal's context allows: 1e999999
        return str(value)
    text = f"{rounded:,.{decimals}f}"
    sign = "-" if amount < 0 and any(c not in "0.," for c in text) else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {code}"


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def format_date(value: Any, fmt: str | None = None) -> str:
    """Format epoch seconds, an ISO 8601 string (Segment timestamps) or a datetime, in UTC.

    ``fmt`` is a ``strftime`` format; the default gives ``May 1, 2024`` (built by hand because
    ``%-d`` is not portable). Unparseable values come back as their text.
    """
    moment = _to_datetime(value)
    if moment is None:
        return "" if value is None or isinstance(value, Undefined) else str(value)
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        return str(value)
    if fmt is None:
        return f"{moment:%b} {moment.day}, {moment.year}"
    try:
        return moment.strftime(str(fmt))
    except ValueError:
        return str(value)


_URL_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")


def _text(value: Any) -> str:
    return "" if value is None or isinstance(value, Undefined) else str(value).strip()


def _host(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. a malformed IPv6 literal
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return host


@lru_cache(maxsize=4096)
def _is_http_url(url: str) -> bool:
    return not _URL_JUNK.search(url) and _host(url) is not None


def http_url(value: Any, fallback: str = "") -> str:
    """``value`` if it is an absolute http(s) URL, else ``fallback``.

    Event properties can come from a browser, so anyone can send ``javascript:`` or worse;
    use this for image sources and links to third parties (a carrier's tracking page).
    """
    url = _text(value)
    return url if _is_http_url(url) else fallback


def shop_link(value: Any, base: Any) -> str:
    """``value`` if it leads to the shop's own site (``base``'s host or a subdomain), else ``base``.

    Relative paths are joined to ``base``. A forged "Product Viewed" event must not turn the
    shop's email into a link to somebody else's site.
    """
    return _shop_link(_text(value), _text(base))


# urllib.parse costs several microseconds per call, and the same product links come back in
# every part of every email of a campaign.
@lru_cache(maxsize=4096)
def _shop_link(url: str, home: str) -> str:
    if not url or _URL_JUNK.search(url):
        return home
    url = urllib.parse.urljoin(home, url)
    host, home_host = _host(url), _host(home)
    if host is None or home_host is None:
        return home
    same = host == home_host or host.endswith("." + home_host) or home_host.endswith("." + host)
    return url if same else home


FILTERS: dict[str, Callable[..., str]] = {
    "money": money,
    "date": format_date,
    "http_url": http_url,
    "shop_link": shop_link,
}


def make_environment(*, autoescape: bool) -> EmailSandbox:
    """A configured sandbox; ``autoescape`` is on for HTML and off for subject and text."""
    env = EmailSandbox(autoescape=autoescape, undefined=LenientUndefined, auto_reload=False)
    env.filters.update(FILTERS)
    return env
