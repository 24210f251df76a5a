"""Email messages built straight as bytes, for the send hot path.

``email.message`` takes about 3 ms per message; writing the few headers and two
quoted-printable parts ourselves takes a few dozen microseconds. The output is a
``multipart/alternative`` (text/plain, then text/html) with CRLF line endings throughout.

Safety rules, because header values carry contact data:
- no value can start a new header: control characters (CR, LF, the rest of C0 and C1, DEL,
  U+2028/9) in free text become spaces, and in addresses or URLs raise ``HeaderInvalid``;
- non-ASCII text is sent as RFC 2047 encoded-words (base64, each at most 75 characters, split on
  UTF-8 character boundaries), domains as IDNA punycode; local parts must be ASCII (no SMTPUTF8);
- headers a DKIM signature covers stay on one line unless they would pass 998 characters; only
  the Subject (and other unstructured text) is folded, and only when encoded;
- body lines starting with "." or "From " are encoded (``=2E``, ``=46``) so neither a naive SMTP
  client's dot handling nor an mbox writer can alter them.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import time
import urllib.parse
from collections.abc import Sequence
from functools import lru_cache

import idna

from engine.errors import HeaderInvalid

MAX_LINE = 998  # RFC 5322 hard limit per line, without CRLF
_ENCODED_LINE = 76  # RFC 2047 limit for a line holding encoded-words
_WORD = 75  # RFC 2047 limit for one encoded-word
_WORD_FRAME = len("=?utf-8?b??=")

_CONTROLS = "\x00-\x1f\x7f-\x9f\u2028\u2029"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_RUN = re.compile(f" *[{_CONTROLS}]+ *")
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_PLAIN_PHRASE = re.compile(f"[{_ATEXT}]+( [{_ATEXT}]+)*")
_LOCAL_PART = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(\.[{_ATEXT}\u0080-\U0010ffff]+)*")
_DOT_ATOM = re.compile(f"[{_ATEXT}]+(\\.[{_ATEXT}]+)*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_MESSAGE_ID = re.compile(rf"<[{_ATEXT}.]+@[{_ATEXT}.\[\]:]+>")
_URI = re.compile(r"[!#-;=?-~]+")  # printable ASCII except space, '"', '<' and '>'
_URI_SAFE = "!#$%&'()*+,-./:;=?@[]_~"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Set by build_message itself; extra_headers may not repeat or override them. Bcc and Cc would
# mail someone the send intent is not about, and Content-* describe the structure built here.
_RESERVED = frozenset(
    {"from", "to", "subject", "date", "message-id", "mime-version", "list-unsubscribe"}
    | {"list-unsubscribe-post", "list-id", "bcc", "cc"}
)
_ADDRESS_HEADERS = frozenset({"reply-to", "sender"})


# Free text and encoded-words --------------------------------------------------------------


def clean_text(value: str) -> str:
    """``value`` with every run of control characters (and the spaces around it) as one space."""
    # Only spaces are trimmed: other Unicode spaces may be meant, and survive encoding.
    return (_CONTROL_RUN.sub(" ", value) if _CONTROL.search(value) else value).strip(" ")


def _encoded_words(text: str, first: int = _WORD) -> list[str]:
    """``text`` as base64 encoded-words; the first at most ``first`` characters, others 75.

    Every word holds whole UTF-8 characters, as RFC 2047 requires. Words preferably end just
    after a space: RFC 2047 readers ignore the whitespace between words, but Python's address
    parser (and so our own capture inbox) puts a space there, which is then harmless.
    """
    data = text.encode("utf-8", "replace")
    words: list[str] = []
    limit = first
    while data:
        size = (limit - _WORD_FRAME) // 4 * 3  # bytes that fit in this word
        cut = min(size, len(data))
        if cut < len(data):
            space = data.rfind(b" ", max(cut - 15, 1), cut)
            if space > 0:
                cut = space + 1
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # a continuation byte
            cut -= 1
        chunk, data = data[:cut], data[cut:]
        words.append(f"=?utf-8?b?{binascii.b2a_base64(chunk, newline=False).decode()}?=")
        limit = _WORD
    return words or ["=?utf-8?b??="]


def _fold(name: str, words: list[str]) -> str:
    """Join encoded-words into header lines of at most 76 characters."""
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > _ENCODED_LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines)


def _unstructured(name: str, value: str) -> str:
    """A header of free text (Subject and the like): one line if ASCII, else encoded and folded.

    ASCII text containing ``=?`` is encoded as well, or a reader would decode it.
    """
    text = clean_text(value)
    if text.isascii() and "=?" not in text and len(name) + 2 + len(text) <= MAX_LINE:
        return f"{name}: {text}"
    first = max(_ENCODED_LINE - len(name) - 2, _WORD_FRAME + 8)  # long names: a short word
    return _fold(name, _encoded_words(text, first=first))


def _phrase(name: str) -> str:
    """A display name as it appears before ``<addr>``: atoms, a quoted-string or encoded-words."""
    if not name:
        return ""
    if name.isascii() and "=?" not in name:
        if _PLAIN_PHRASE.fullmatch(name):
            return name
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return " ".join(_encoded_words(name))


def _structured(name: str, display: str, rest: str) -> str:
    """``name: display-name rest`` on one line; folded (name encoded) only past 998 chars."""
    display = clean_text(display)
    phrase = _phrase(display)
    line = f"{name}: {phrase} {rest}" if phrase else f"{name}: {rest}"
    if len(line) <= MAX_LINE:
        return line
    if len(rest) + 2 > MAX_LINE:
        raise HeaderInvalid(f"{name} is longer than {MAX_LINE} characters")
    return _fold(name, [*_encoded_words(display), rest])


# Addresses ------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """The ASCII (punycode) form of ``domain``; ``HeaderInvalid`` if it is not a host name."""
    if _CONTROL.search(domain):
        raise HeaderInvalid(f"control character in domain {domain!r}")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise HeaderInvalid(f"invalid internationalized domain {domain!r}: {exc}") from exc
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise HeaderInvalid(f"invalid domain {domain!r}")
    return domain


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def _split_addr_spec(addr: str) -> tuple[str, str]:
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise HeaderInvalid(f"address {addr!r} needs a local part, '@' and a domain")
    if not _LOCAL_PART.fullmatch(local):
        raise HeaderInvalid(f"address {addr!r}: invalid local part (quoted forms unsupported)")
    if len(local.encode("utf-8", "replace")) > 64:
        raise HeaderInvalid(f"address {addr!r}: local part longer than 64 octets")
    return local, domain


def parse_address(value: str) -> tuple[str, str]:
    """Split ``"Name <addr@domain>"`` (or a bare ``addr@domain``) into ``(name, addr-spec)``.

    The name is unquoted (``""`` when absent); the addr-spec is returned as written.
    ``HeaderInvalid`` says why a value is refused: control characters (a header injection
    attempt), several addresses, no domain, a domain that is not a host name.
    """
    if _CONTROL.search(value):
        raise HeaderInvalid(f"control character in address {value!r}")
    text = value.strip()
    name = ""
    if text.endswith(">"):
        lt = text.rfind("<")
        if lt < 0:
            raise HeaderInvalid(f"address {value!r} has '>' without '<'")
        name, text = _unquote(text[:lt].strip()), text[lt + 1 : -1].strip()
    _, domain = _split_addr_spec(text)
    ascii_domain(domain)
    if len(text.encode("utf-8", "replace")) > 254:
        raise HeaderInvalid(f"address {value!r} is longer than 254 octets")
    return name, text


def envelope_address(addr: str) -> str:
    """The ASCII form of an address for MAIL FROM / RCPT TO (IDN domains as punycode).

    A non-ASCII local part would need SMTPUTF8, which is not used: ``HeaderInvalid``.
    """
    _, spec = parse_address(addr)
    local, domain = _split_addr_spec(spec)
    if not local.isascii():
        raise HeaderInvalid(f"address {spec!r}: non-ASCII local part needs SMTPUTF8")
    return f"{local}@{ascii_domain(domain)}"


def format_address(name: str, addr: str) -> str:
    """``"Name" <addr>`` from a display name taken from contact data and an address.

    The name is free text (control characters become spaces, quotes are escaped), so a
    hostile ``first_name`` cannot make the address unusable; the address must be valid.
    ``parse_address`` of the result gives back the cleaned name and ``addr``.
    """
    _, spec = parse_address(addr)
    display = clean_text(name)
    if not display:
        return spec
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + f'" <{spec}>'


@lru_cache(maxsize=1024)
def _address_header(name: str, value: str) -> str:
    display, _ = parse_address(value)
    return _structured(name, display, f"<{envelope_address(value)}>")


def make_message_id(intent_id: str, domain: str) -> str:
    """``<intent_id@domain>``, with an IDN domain in punycode.

    One id per send intent, so a retried send carries the same Message-ID.
    """
    if not intent_id or not _DOT_ATOM.fullmatch(intent_id):
        raise HeaderInvalid(f"intent id {intent_id!r} cannot be used in a Message-ID")
    return f"<{intent_id}@{ascii_domain(domain)}>"


# Other headers --------------------------------------------------------------------------


def format_date(when: float) -> str:
    """RFC 5322 date-time in UTC, e.g. ``Tue, 07 May 2024 12:00:00 +0000``."""
    t = time.gmtime(when)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _uri(value: str, schemes: tuple[str, ...], what: str) -> str:
    if _CONTROL.search(value):
        raise HeaderInvalid(f"control character in {what} {value!r}")
    uri = value.strip()
    if not uri.isascii():
        uri = urllib.parse.quote(uri, safe=_URI_SAFE)
    if not uri.lower().startswith(schemes) or not _URI.fullmatch(uri):
        raise HeaderInvalid(f"{what} {value!r} is not a valid {'/'.join(schemes)} URI")
    return uri


def _list_unsubscribe(url: str | None, mailto: str | None) -> list[str]:
    """RFC 2369 List-Unsubscribe, plus RFC 8058 one-click when there is a URL."""
    targets: list[str] = []
    if url:
        targets.append(f"<{_uri(url, ('https://', 'http://'), 'unsubscribe URL')}>")
    if mailto:
        if not mailto.strip().lower().startswith("mailto:"):
            mailto = "mailto:" + mailto.strip()
        targets.append(f"<{_uri(mailto, ('mailto:',), 'unsubscribe mailto')}>")
    if not targets:
        return []
    line = "List-Unsubscribe: " + ", ".join(targets)
    if len(line) > MAX_LINE:
        raise HeaderInvalid(f"List-Unsubscribe is longer than {MAX_LINE} characters")
    lines = [line]
    if url:
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return lines


def _list_id(value: str) -> str:
    """RFC 2919 List-Id from ``"Name <id.domain>"`` or ``"id.domain"``."""
    if _CONTROL.search(value):
        raise HeaderInvalid(f"control character in List-Id {value!r}")
    text = value.strip()
    name = ""
    if text.endswith(">") and "<" in text:
        lt = text.rfind("<")
        name, text = _unquote(text[:lt].strip()), text[lt + 1 : -1].strip()
    if not _DOT_ATOM.fullmatch(text):
        raise HeaderInvalid(f"List-Id {value!r}: the id must be a dot-atom like 'news.shop.com'")
    return _structured("List-Id", name, f"<{text}>")


def _extra(name: str, value: str) -> str:
    if not _FIELD_NAME.fullmatch(name) or len(name) > 76:
        raise HeaderInvalid(f"invalid header name {name!r}")
    key = name.lower()
    if key in _RESERVED or key.startswith("content-"):
        raise HeaderInvalid(f"header {name!r} is set by build_message and cannot be overridden")
    if key in _ADDRESS_HEADERS:
        return _address_header(name, value)
    return _unstructured(name, value)


# Body -------------------------------------------------------------------------------------


_SAFE_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n"  # printable ASCII: stays literal
_HEX = [b"=%02X" % byte for byte in range(256)]
_ESCAPE = re.compile(rb"[^\t\n\x20-\x7e]")
_SOFT_CHUNK = re.compile(rb".{72}(?:=..|[^=]{1,3})|.{1,72}(?:=..)?", re.DOTALL)
_RISKY_START = (b".", b"From ")
_WHITESPACE = (b" ", b"\t")


# Encoded long lines, for the lines seen before: a template's long lines (inline CSS, table
# markup) are the same in every message built from it. A line is cached only on its second
# sighting, so the personalized ones (minified MJML puts a product table on one line of 4-7 KB)
# never take room: with every line cached, 8,192 personalized lines of 6.5 KB held 112 MB, and
# at 1,000 events/s the engine's RSS grew from 106 to 166 MiB in five minutes.
_LINE_CACHE_SIZE = 2048
_SEEN_ONCE_SIZE = 65_536
_encoded_lines: dict[bytes, bytes] = {}
_seen_once: set[int] = set()


def _encode_line(line: bytes) -> bytes:
    """``_wrap_line``, remembered for a line that comes back (see ``_encoded_lines``)."""
    encoded = _encoded_lines.get(line)
    if encoded is not None:
        return encoded
    encoded = _wrap_line(line)
    key = hash(line)  # bytes keep their hash: the lookup above computed it
    if key in _seen_once:
        if len(_encoded_lines) >= _LINE_CACHE_SIZE:  # clear(): atomic, for builds on threads
            _encoded_lines.clear()
        _encoded_lines[line] = encoded
    else:
        if len(_seen_once) >= _SEEN_ONCE_SIZE:
            _seen_once.clear()
        _seen_once.add(key)
    return encoded


def _wrap_line(line: bytes) -> bytes:
    """One line of text (escapes done) as quoted-printable lines joined by CRLF.

    A line starting with "." or "From " gets that start encoded (``=2E``, ``=46``). In a line
    long enough to be wrapped every "." and "From " is encoded, since any of them may land at
    the start of a wrapped line: cheaper than looking for the ones that do.
    """
    if line.endswith(_WHITESPACE):  # trailing whitespace would be stripped in transit
        line = line[:-1] + _HEX[line[-1]]
    if line.startswith(b"."):
        line = b"=2E" + line[1:]
    elif line.startswith(b"From "):
        line = b"=46" + line[1:]
    if len(line) <= 76:
        return line
    line = line.replace(b".", b"=2E").replace(b"From ", b"=46rom ")
    # Chunks of at most 75 octets that never end inside an =XX escape, joined by soft breaks.
    return b"=\r\n".join(_SOFT_CHUNK.findall(line))


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends and lines of at most 76 octets.

    Written with bytes methods and one regex rather than ``binascii.b2a_qp``, which goes byte
    by byte and was the slowest step of a build on 10-20 KB of MJML output; this takes about
    half as long.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8", "replace").replace(b"=", b"=3D")
    unsafe = data.translate(None, _SAFE_BYTES)  # what must become =XX besides "="
    if unsafe:
        kinds = set(unsafe)
        if len(kinds) <= 8:  # a few accented letters or symbols: one C-speed pass each
            for byte in kinds:
                data = data.replace(bytes((byte,)), _HEX[byte])
        else:
            data = _ESCAPE.sub(lambda m: _HEX[m.group()[0]], data)
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        if len(line) > 76 or line.endswith(_WHITESPACE) or line.startswith(_RISKY_START):
            lines[index] = _encode_line(line)
    return b"\r\n".join(lines)


def _boundary(message_id: str) -> str:
    # "=_" can never occur in quoted-printable output (a literal "=" is always "=3D"), so the
    # boundary cannot collide with either part. Derived from the Message-ID so the same
    # message always builds to the same bytes.
    digest = hashlib.blake2s(message_id.encode("ascii"), digest_size=12).hexdigest()
    return f"=_cc{digest}"


def build_message(
    *,
    from_address: str,
    to_address: str,
    subject: str,
    html: str,
    text: str,
    message_id: str,
    date: float,
    list_unsubscribe_url: str | None = None,
    list_unsubscribe_mailto: str | None = None,
    list_id: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The complete message as bytes, ready for SMTP DATA (before dot-stuffing).

    ``date`` is epoch seconds; ``message_id`` comes from ``make_message_id``. Raises
    ``HeaderInvalid`` for an address, URL, id or header name that cannot be made safe.
    """
    if not _MESSAGE_ID.fullmatch(message_id) or len(message_id) > MAX_LINE - 12:
        raise HeaderInvalid(f"invalid Message-ID {message_id!r}")
    boundary = _boundary(message_id)
    lines = [
        _address_header("From", from_address),
        _address_header("To", to_address),
        _unstructured("Subject", subject),
        f"Date: {format_date(date)}",
        f"Message-ID: {message_id}",
        *_list_unsubscribe(list_unsubscribe_url, list_unsubscribe_mailto),
    ]
    if list_id:
        lines.append(_list_id(list_id))
    lines += [_extra(name, value) for name, value in extra_headers]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"']
    head = "\r\n".join(lines).encode("ascii")
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            head,
            b"\r\n",
            delimiter,
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            delimiter,
            b"Content-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )
