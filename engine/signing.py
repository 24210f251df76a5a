"""DKIM signatures (RFC 6376) per sending domain, fast enough for the send hot path.

``DkimSigner.sign(message)`` prepends one ``DKIM-Signature:`` header: rsa-sha256,
relaxed/relaxed, covering those of From, Subject, Date, Message-ID, To, MIME-Version,
Content-Type, List-Unsubscribe, List-Unsubscribe-Post and List-Id that are present, with From
listed twice (oversigned) so no second From can be added without breaking the signature.

Why not ``dkim.sign``: dkimpy does the RSA operation in pure Python (``pow`` on 2048-bit
numbers) and re-parses the PEM key on every call: about 10 ms per 15-20 KB message, i.e. under
100 messages per second per core. Here the canonicalization (relaxed header and body, a few
regular expressions over bytes) is done directly and the RSA signature by OpenSSL through
``cryptography`` with the key parsed once; dkimpy stays the reference: the tests verify every
signature with ``dkim.verify``, and ``DkimSigner(..., use_dkimpy=True)`` signs with dkimpy
itself (for comparison and as a fallback).

Messages come from ``engine.mime.build_message``: CRLF line endings and the covered headers on
one line, so nothing between here and the receiver has a reason to refold them. Signing never
folds or rewrites a header of the message; the DKIM-Signature header itself is two lines (the
tags, then ``b=`` on a continuation line), which relaxed canonicalization is built for.

Keys are secrets: a ``DkimKey`` is made from PEM bytes or from a loader callable (a file path
from the settings, or the OS keyring, see ``key_file_loader`` and ``keyring_loader``); neither
the key nor anything derived from it appears in a repr, an error message or a log line.
"""

from __future__ import annotations

import base64
import logging
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from engine.errors import EngineError

__all__ = [
    "SIGNED_HEADERS",
    "DkimKey",
    "DkimSigner",
    "SigningError",
    "check_key_file",
    "dns_name",
    "generate_key",
    "key_file_loader",
    "keyring_loader",
    "loader_from_setting",
    "public_record",
    "signer_from_settings",
]

log = logging.getLogger(__name__)

# The order of h=; each is signed once when present, From twice (oversigned).
SIGNED_HEADERS = (
    "From",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
)
MIN_KEY_BITS = 1024

_SELECTOR = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_-]+)*")
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})+")
_WSP_RUN = re.compile(rb"\t[ \t]*| [ \t]+")  # runs a single space would not already be
_WSP_BEFORE_CRLF = re.compile(rb" \r\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FROM_DOMAIN = re.compile(rb"@([A-Za-z0-9.-]+)>?[ \t]*$")


class SigningError(EngineError):
    """A message cannot be signed: no key for its domain, a bad key, a malformed message."""


def dns_name(domain: str, selector: str) -> str:
    """Where the public key is published: ``<selector>._domainkey.<domain>``."""
    return f"{selector}._domainkey.{domain.lower().rstrip('.')}"


@dataclass(frozen=True)
class DkimKey:
    """One signing key: ``d=domain``, ``s=selector`` and the PEM private key (never shown)."""

    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)

    @classmethod
    def load(cls, domain: str, selector: str, loader: Callable[[], bytes | str]) -> DkimKey:
        """The key that ``loader`` returns (from a file, the OS keyring, a secrets manager).

        A loader that fails gives a ``SigningError`` naming the domain and selector only.
        """
        try:
            pem = loader()
        except Exception as exc:
            raise SigningError(
                f"cannot load the DKIM key for {domain} (selector {selector}): {type(exc).__name__}"
            ) from None
        return cls(
            domain, selector, pem.encode("ascii", "replace") if isinstance(pem, str) else pem
        )


def key_file_loader(path: str | Path) -> Callable[[], bytes]:
    """A loader reading a PEM file (the path given in the settings)."""

    def load() -> bytes:
        return Path(path).read_bytes()

    return load


def keyring_loader(service: str, username: str) -> Callable[[], str]:
    """A loader reading the PEM from the OS keyring (``keyring.get_password``)."""

    def load() -> str:
        import keyring  # the keyring backends are slow to import; only when configured

        value = keyring.get_password(service, username)
        if value is None:
            raise LookupError(f"no keyring entry {service}/{username}")
        return value

    return load


def loader_from_setting(value: str) -> Callable[[], bytes | str]:
    """The loader a setting names: ``file:/etc/campaign/dkim.pem`` (or a bare path) or
    ``keyring:<service>/<username>``. The setting holds where the key is, never the key."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        raise SigningError("the DKIM key setting holds a key; give a file: or keyring: location")
    if text.startswith("keyring:"):
        service, slash, username = text[8:].partition("/")
        if not service or not slash or not username:
            raise SigningError("a keyring DKIM key setting is keyring:<service>/<username>")
        return keyring_loader(service, username)
    path = text[5:] if text.startswith("file:") else text
    if not path:
        raise SigningError("the DKIM key setting is empty")
    return key_file_loader(path)


def check_key_file(path: str | Path) -> None:
    """Refuse a key file others can read or write, or its group can write; warn when its
    group can read it (a dedicated group, as OpenDKIM setups use, is a legitimate choice).

    The path is named in the error; the key never is.
    """
    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise SigningError(f"cannot read the DKIM key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise SigningError(f"the DKIM key file {path} is not a regular file")
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise SigningError(
            f"the DKIM key file {path} is accessible to other users (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    if mode & stat.S_IRGRP:
        log.warning(
            "the DKIM key file %s is readable by its group (mode %04o)", path, stat.S_IMODE(mode)
        )


def signer_from_settings(dkim: Mapping[str, Mapping[str, str]]) -> DkimSigner | None:
    """The signer for the ``[dkim."<domain>"]`` settings (``selector``, ``key``), or None when
    no domain is configured. Key files are checked (``check_key_file``) and every key is
    loaded and parsed now, so a missing or bad key stops the start, not a send."""
    keys: list[DkimKey] = []
    for domain, entry in sorted(dkim.items()):
        location = entry["key"].strip()
        if not location.startswith("keyring:") and not location.startswith("-----BEGIN"):
            check_key_file(location[5:] if location.startswith("file:") else location)
        keys.append(DkimKey.load(domain, entry["selector"], loader_from_setting(location)))
    return DkimSigner(keys) if keys else None


def public_record(private_pem: bytes) -> str:
    """The DNS TXT record value (``v=DKIM1; k=rsa; p=...``) for an RSA private key."""
    try:
        private = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningError("not a readable, unencrypted PEM private key") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise SigningError("not an RSA key (rsa-sha256 is used)")
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii")


@dataclass(frozen=True)
class _Prepared:
    domain: bytes
    selector: bytes
    private_key: rsa.RSAPrivateKey = field(repr=False)


def _parse_key(key: DkimKey) -> _Prepared:
    where = f"{key.domain} (selector {key.selector})"
    if not _DOMAIN.fullmatch(key.domain) or not key.domain.isascii():
        raise SigningError(f"DKIM domain {key.domain!r} is not an ASCII host name")
    if not _SELECTOR.fullmatch(key.selector):
        raise SigningError(f"DKIM selector {key.selector!r} is not a valid selector")
    try:
        private = serialization.load_pem_private_key(key.private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The exception text may quote parts of the key: not chained, not shown.
        raise SigningError(
            f"the DKIM key for {where} is not a readable, unencrypted PEM private key"
        ) from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise SigningError(f"the DKIM key for {where} is not an RSA key (rsa-sha256 is used)")
    if private.key_size < MIN_KEY_BITS:
        raise SigningError(
            f"the DKIM key for {where} has {private.key_size} bits; "
            f"receivers ignore keys under {MIN_KEY_BITS} bits, use 2048"
        )
    return _Prepared(key.domain.lower().encode("ascii"), key.selector.encode("ascii"), private)


def _split(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as ``(raw name, raw value incl. continuation lines)`` and the body."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        if message.endswith(b"\r\n"):
            head, body = message[:-2], b""
        else:
            raise SigningError("message has no header/body separator (empty line)")
    else:
        head, body = message[:end], message[end + 4 :]
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise SigningError("message starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise SigningError(f"malformed header line {line[:60]!r}")
        fields.append((name, value))
    return fields, body


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.lower() + b":" + value + b"\r\n"


def _relaxed_body(body: bytes) -> bytes:
    if b"\t" in body or b"  " in body:  # both C-speed scans; the regex is ~10x slower
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = _WSP_BEFORE_CRLF.sub(b"\r\n", body)
    body = body.rstrip(b" ")
    while body.endswith(b"\r\n"):
        body = body[:-2]
    return body + b"\r\n" if body else b""


def _sha256_b64(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return base64.b64encode(digest.finalize())


class DkimSigner:
    """Signs messages with the key of their From domain (or a parent domain's key).

    ``keys`` holds one ``DkimKey`` per sending domain; all are parsed at construction, so a bad
    key fails at start-up, not on the first send.
    """

    def __init__(self, keys: Iterable[DkimKey], *, use_dkimpy: bool = False) -> None:
        self._keys: dict[str, _Prepared] = {}
        self._pems: dict[str, DkimKey] = {}
        for key in keys:
            prepared = _parse_key(key)
            self._keys[prepared.domain.decode("ascii")] = prepared
            self._pems[prepared.domain.decode("ascii")] = key
        self._use_dkimpy = use_dkimpy

    def __repr__(self) -> str:
        return f"DkimSigner(domains={sorted(self._keys)!r})"

    @property
    def domains(self) -> list[str]:
        return sorted(self._keys)

    def key_for(self, domain: str) -> str | None:
        """The ``d=`` domain that would sign mail from ``domain`` (itself or a parent)."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self._keys:
                return candidate
        return None

    def sign(self, message: bytes, *, domain: str | None = None, now: float | None = None) -> bytes:
        """``message`` with a ``DKIM-Signature:`` header prepended.

        ``domain`` defaults to the From address's domain; ``now`` (epoch seconds) sets ``t=``.
        Bare LF line endings are turned into CRLF first (SMTP sends CRLF; the signature must
        cover what is sent). ``SigningError`` for an unknown domain or a malformed message.
        """
        if message.count(b"\n") != message.count(b"\r\n"):
            message = _BARE_LF.sub(b"\r\n", message)
        fields, body = _split(message)
        if not any(name.lower() == b"from" for name, _ in fields):
            raise SigningError("message has no From header; DKIM requires signing it")
        if domain is None:
            domain = self._from_domain(fields)
        d = self.key_for(domain)
        if d is None:
            raise SigningError(
                f"no DKIM key for domain {domain!r} (keys for: {', '.join(self.domains) or 'none'})"
            )
        key = self._keys[d]
        by_name: dict[bytes, list[bytes]] = {}
        for name, value in fields:
            by_name.setdefault(name.lower(), []).append(_relaxed_header(name, value))
        signed = [h for h in SIGNED_HEADERS if h.lower().encode() in by_name]
        signed.append("From")  # oversign: a From added later breaks the signature
        if self._use_dkimpy:
            return self._sign_dkimpy(message, d, signed)
        selected: list[bytes] = []
        taken: dict[bytes, int] = {}
        for h in signed:
            lower = h.lower().encode()
            seen = by_name[lower]
            n = taken.get(lower, 0)
            if n < len(seen):  # the last instance not yet used; none left: the null string
                selected.append(seen[len(seen) - 1 - n])
            taken[lower] = n + 1
        stamp = int(time.time() if now is None else now)
        tags = (
            b"v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + key.domain + b"; s=" + key.selector
            + b"; t=" + str(stamp).encode() + b"; h=" + ":".join(signed).encode()
            + b"; bh=" + _sha256_b64(_relaxed_body(body)) + b";"
        )  # fmt: skip
        unsigned = _relaxed_header(b"DKIM-Signature", b" " + tags + b"\r\n b=")[:-2]
        data = b"".join((*selected, unsigned))
        signature = key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        header = b"DKIM-Signature: " + tags + b"\r\n b=" + base64.b64encode(signature) + b"\r\n"
        return header + message

    def _from_domain(self, fields: list[tuple[bytes, bytes]]) -> str:
        froms = [value for name, value in fields if name.lower() == b"from"]
        if len(froms) != 1:
            raise SigningError(f"message has {len(froms)} From headers; exactly one is needed")
        match = _FROM_DOMAIN.search(froms[0].replace(b"\r\n", b""))
        if match is None:
            raise SigningError("the From header has no address with a domain")
        return match.group(1).decode("ascii")

    def _sign_dkimpy(self, message: bytes, d: str, signed: list[str]) -> bytes:
        import dkim

        key = self._pems[d]
        try:
            header: bytes = dkim.sign(
                message,
                key.selector.encode("ascii"),
                d.encode("ascii"),
                key.private_key_pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[h.lower().encode() for h in signed],
            )
        except dkim.DKIMException as exc:
            raise SigningError(f"dkimpy could not sign for {d}: {type(exc).__name__}") from None
        return header + message


def generate_key(domain: str, selector: str, bits: int = 2048) -> tuple[bytes, str]:
    """A new RSA key for ``domain``: ``(private PEM, DNS TXT record value)``.

    Publish the TXT value at ``dns_name(domain, selector)``; keep the PEM as a secret (a file
    readable by the engine only, or the OS keyring). The value is longer than 255 characters:
    zone files write it as several quoted strings, which DNS joins.
    """
    if bits < 2048:
        raise SigningError(f"DKIM keys should have at least 2048 bits, not {bits}")
    if not _DOMAIN.fullmatch(domain) or not _SELECTOR.fullmatch(selector):
        raise SigningError(f"invalid DKIM domain {domain!r} or selector {selector!r}")
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem, public_record(pem)
