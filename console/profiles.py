"""Saved connection profiles: where remote engines are and how to log in to their NATS.

A profile is data: a name, one or more NATS URLs, the kind of login and the non-secret parts
of it (a user name, a credentials file's path, a TLS CA file's path). It is kept in a TOML file
under the user's config directory (``connections.toml``, see :func:`default_profiles_path`).
The secret of a profile (a token, a password or an nkey seed) lives only in the OS keyring
(``keyring``, service ``campaign-console``, user ``profile:<name>``): never in the file, a log
or an error message. A machine without a usable keyring gets ``KeyringUnavailable`` naming the
fix, never a plaintext fallback (the engine does the same for route passwords,
``engine/deliver/credentials.py``).

No Qt here: the connection chooser (``console.connection_dialog``) and the command line
(``campaign-console --profile NAME``) both use this module.
"""

from __future__ import annotations

import json
import os
import ssl
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console.errors import ConsoleError, KeyringUnavailable

KEYRING_SERVICE = "campaign-console"
"""The keyring service of every console secret (profiles: user ``profile:<name>``)."""

SCHEMES = ("nats", "tls", "ws", "wss")

AUTH_NONE = "none"
AUTH_TOKEN = "token"
AUTH_USER = "user"
AUTH_NKEY = "nkey"
AUTH_CREDS = "creds"
AUTH_KINDS: dict[str, str] = {
    AUTH_NONE: "No login",
    AUTH_TOKEN: "Token",
    AUTH_USER: "User and password",
    AUTH_NKEY: "NKey seed",
    AUTH_CREDS: "Credentials file (.creds)",
}
"""Login kinds and how the chooser names them."""
SECRET_KINDS: dict[str, str] = {AUTH_TOKEN: "token", AUTH_USER: "password", AUTH_NKEY: "nkey seed"}
"""Login kinds whose secret is kept in the keyring, and what the secret is called."""
USER_KINDS = (AUTH_USER, AUTH_NKEY)
"""Login kinds that name the user: the console signs its control requests with that name."""

MAX_NAME = 80


class ProfileInvalid(ConsoleError, ValueError):
    """A profile (or a profiles file) says something that cannot work; the words say what."""


class SecretMissing(ConsoleError, LookupError):
    """A profile needs a secret that the keyring does not hold."""


def default_profiles_path() -> Path:
    """``connections.toml`` in the user's config directory (e.g. ~/.config/campaign-console)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("campaign-console", appauthor=False)) / (
        "connections.toml"
    )


# ------------------------------------------------------------------------------- validation


def parse_servers(text: str | list[str]) -> list[str]:
    """The NATS URLs in ``text`` (comma, space or newline separated), checked one by one.

    Raises ``ProfileInvalid`` naming the URL and what is wrong with it. A URL may not carry a
    login (``nats://token@host``): the secret belongs in the keyring, not in the profile.
    """
    items = text if isinstance(text, list) else text.replace(",", " ").split()
    servers = [s.strip() for s in items if s.strip()]
    if not servers:
        raise ProfileInvalid("Give at least one NATS URL, e.g. nats://nats.example.com:4222.")
    for url in servers:
        _check_url(url)
    return servers


def _check_url(url: str) -> None:
    if "://" not in url:
        raise ProfileInvalid(
            f"{url!r} is not a NATS URL: it needs a scheme (nats://, tls://, ws:// or wss://),"
            " e.g. nats://nats.example.com:4222."
        )
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ProfileInvalid(
            f"{url!r}: the scheme {parts.scheme + '://'!r} is not one NATS speaks"
            " (nats://, tls://, ws:// or wss://)."
        )
    if parts.username is not None or parts.password is not None:
        raise ProfileInvalid(
            f"The URL for {parts.hostname or 'the server'} carries a login: remove it from the"
            " URL and choose the login kind instead (its secret is kept in the OS keyring)."
        )
    if not parts.hostname:
        raise ProfileInvalid(f"{url!r} names no host, e.g. nats://nats.example.com:4222.")
    try:
        port = parts.port
    except ValueError:
        raise ProfileInvalid(f"{url!r}: the port must be a number from 1 to 65535.") from None
    if port == 0:
        raise ProfileInvalid(f"{url!r}: the port must be a number from 1 to 65535.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProfileInvalid(f"{url!r}: a NATS URL has no path or query, only scheme://host:port.")


def check_name(name: str) -> str:
    """The profile name, stripped; ``ProfileInvalid`` if empty, too long or unprintable."""
    name = name.strip()
    if not name:
        raise ProfileInvalid("Give the profile a name, e.g. the cluster's (Production EU).")
    if len(name) > MAX_NAME:
        raise ProfileInvalid(f"The profile name is too long ({len(name)} characters, at most 80).")
    if not name.isprintable():
        raise ProfileInvalid("The profile name may not hold control characters or line breaks.")
    if name.lower() in ("local", "local stack"):
        raise ProfileInvalid(f"{name!r} is reserved for the local stack; choose another name.")
    return name


@dataclass(frozen=True)
class Profile:
    """One saved connection. Holds no secret: see :class:`ProfileStore` for those."""

    name: str
    servers: list[str]
    auth: str = AUTH_NONE
    user: str = ""
    """The user name (login kinds ``user`` and ``nkey``: the engines know users by name, and
    the control subjects carry it; docs/access.md)."""
    creds_file: str = ""
    """The path of a NATS ``.creds`` file (login kind ``creds``)."""
    tls_ca: str = ""
    """A CA certificate file (PEM) to check the servers' TLS certificates with."""

    @property
    def url(self) -> str:
        """The servers as one comma-separated string (what the top bar shows)."""
        return ", ".join(self.servers)

    @property
    def needs_secret(self) -> bool:
        return self.auth in SECRET_KINDS

    def checked(self) -> Profile:
        """This profile, cleaned up, or ``ProfileInvalid`` saying the first thing wrong."""
        name = check_name(self.name)
        servers = parse_servers(self.servers)
        if self.auth not in AUTH_KINDS:
            kinds = ", ".join(AUTH_KINDS)
            raise ProfileInvalid(f"Unknown login kind {self.auth!r} (one of: {kinds}).")
        user = self.user.strip()
        if self.auth == AUTH_USER and not user:
            raise ProfileInvalid("Login with user and password needs the user name.")
        if self.auth == AUTH_NKEY and not user:
            raise ProfileInvalid(
                "Login with an nkey seed needs the user name too: the engines know users by"
                " name (campaign-engine users list)."
            )
        creds = self.creds_file.strip()
        if self.auth == AUTH_CREDS and not creds:
            raise ProfileInvalid("Login with a credentials file needs the file's path.")
        for value, what in ((user, "user name"), (creds, "credentials file"), (self.tls_ca, "CA")):
            if value and not value.isprintable():
                raise ProfileInvalid(f"The {what} may not hold control characters.")
        return replace(
            self,
            name=name,
            servers=servers,
            user=user if self.auth in USER_KINDS else "",
            creds_file=creds if self.auth == AUTH_CREDS else "",
            tls_ca=self.tls_ca.strip(),
        )

    def to_toml(self) -> dict[str, Any]:
        return {
            "servers": list(self.servers),
            "auth": self.auth,
            "user": self.user,
            "creds_file": self.creds_file,
            "tls_ca": self.tls_ca,
        }

    @classmethod
    def from_toml(cls, name: str, raw: Any) -> Profile:
        if not isinstance(raw, dict):
            raise ProfileInvalid(f"Profile {name!r} is not a table.")
        unknown = sorted(set(raw) - {"servers", "auth", "user", "creds_file", "tls_ca"})
        if unknown:
            raise ProfileInvalid(f"Profile {name!r} has unknown fields: {', '.join(unknown)}.")
        servers = raw.get("servers", [])
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise ProfileInvalid(f"Profile {name!r}: servers must be a list of NATS URLs.")
        fields = {k: raw.get(k, "") for k in ("user", "creds_file", "tls_ca")}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise ProfileInvalid(f"Profile {name!r}: {key} must be a string.")
        auth = raw.get("auth", AUTH_NONE)
        if not isinstance(auth, str):
            raise ProfileInvalid(f"Profile {name!r}: auth must be a string.")
        try:
            return cls(name=name, servers=servers, auth=auth, **fields).checked()
        except ProfileInvalid as exc:
            raise ProfileInvalid(f"Profile {name!r}: {exc}") from None


# ------------------------------------------------------------------------------- the login


@dataclass(frozen=True)
class NatsLogin:
    """Everything ``nats.connect`` needs to log in, secrets included: never logged or stored.

    ``repr`` hides the secrets, so a traceback or a debug log cannot show them.
    """

    token: str = field(default="", repr=False)
    user: str = ""
    """The NATS user signing in (with a password or an nkey seed): control requests go out
    under this name (``control.<user>.…``) and replies come back to ``_INBOX.<user>``."""
    password: str = field(default="", repr=False)
    nkey_seed: str = field(default="", repr=False)
    creds_file: str = ""
    tls_ca: str = ""
    tls: bool = False
    """Whether to use TLS even without a CA file (a ``tls://`` or ``wss://`` URL)."""

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (files are checked here, in words)."""
        options: dict[str, Any] = {}
        if self.token:
            options["token"] = self.token
        if self.user and not self.nkey_seed and not self.creds_file:
            options["user"] = self.user
            options["password"] = self.password
        if self.nkey_seed or self.creds_file:
            _need_nkeys()
        if self.nkey_seed:
            options["nkeys_seed_str"] = self.nkey_seed
        if self.creds_file:
            path = Path(self.creds_file).expanduser()
            if not path.is_file():
                raise ProfileInvalid(f"The credentials file {str(path)!r} does not exist.")
            options["user_credentials"] = str(path)
        if self.tls_ca or self.tls:
            options["tls"] = tls_context(self.tls_ca)
        return options


def _need_nkeys() -> None:
    try:
        import nkeys  # noqa: F401 - nats-py signs the server's nonce with it
    except ImportError:
        raise ProfileInvalid(
            "NKey and credentials-file logins need the 'nkeys' package (pip install nkeys)."
        ) from None


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A TLS context that checks server certificates (against ``ca_file`` when given)."""
    if not ca_file:
        return ssl.create_default_context()
    path = Path(ca_file).expanduser()
    if not path.is_file():
        raise ProfileInvalid(f"The TLS CA file {str(path)!r} does not exist.")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise ProfileInvalid(
            f"The TLS CA file {str(path)!r} could not be read as PEM certificates"
            f" ({type(exc).__name__})."
        ) from None


def login_for(profile: Profile, secret: str) -> NatsLogin:
    """The login of ``profile`` with its ``secret`` (from the keyring or the chooser's field)."""
    if profile.needs_secret and not secret:
        raise SecretMissing(
            f"Profile {profile.name!r} logs in with a {SECRET_KINDS[profile.auth]}, but none is"
            " stored in the OS keyring: edit the profile and type it."
        )
    wants_tls = any(urlsplit(s).scheme in ("tls", "wss") for s in profile.servers)
    return NatsLogin(
        token=secret if profile.auth == AUTH_TOKEN else "",
        user=profile.user if profile.auth in USER_KINDS else "",
        password=secret if profile.auth == AUTH_USER else "",
        nkey_seed=secret if profile.auth == AUTH_NKEY else "",
        creds_file=profile.creds_file if profile.auth == AUTH_CREDS else "",
        tls_ca=profile.tls_ca,
        tls=wants_tls,
    )


# ------------------------------------------------------------------------------- the keyring


def keyring_backend() -> Any:
    """The keyring backend in use, or ``KeyringUnavailable`` when none can hold secrets."""
    import keyring
    from keyring.backends import chainer, fail, null

    backend = keyring.get_keyring()
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    viable = not isinstance(backend, fail.Keyring | null.Keyring) and not (
        isinstance(backend, chainer.ChainerBackend) and not backend.backends
    )
    if not viable:
        raise KeyringUnavailable(
            f"No OS keyring is available to hold connection secrets ({name}): install or"
            " unlock one (GNOME Keyring or KWallet on Linux, the macOS Keychain, Windows"
            " Credential Manager) or choose one with PYTHON_KEYRING_BACKEND. The console never"
            " keeps a token or password in a plain file."
        )
    return backend


def _secret_user(name: str) -> str:
    return f"profile:{name}"


def read_secret(name: str) -> str:
    """The secret of profile ``name`` from the keyring ("" when none is stored)."""
    backend = keyring_backend()
    try:
        value = backend.get_password(KEYRING_SERVICE, _secret_user(name))
    except Exception as exc:  # a locked or broken keyring: say which, never what it held
        raise KeyringUnavailable(
            f"The OS keyring could not be read ({type(exc).__name__}); unlock it and try again."
        ) from None
    return str(value or "")


def store_secret(name: str, secret: str) -> None:
    """Keep the secret of profile ``name`` in the keyring."""
    backend = keyring_backend()
    try:
        backend.set_password(KEYRING_SERVICE, _secret_user(name), secret)
    except Exception as exc:
        raise KeyringUnavailable(
            f"The OS keyring refused the secret ({type(exc).__name__}); unlock it and try again."
        ) from None


def delete_secret(name: str) -> None:
    """Forget the secret of profile ``name`` (nothing happens when none is stored)."""
    import keyring.errors

    backend = keyring_backend()
    try:
        backend.delete_password(KEYRING_SERVICE, _secret_user(name))
    except keyring.errors.PasswordDeleteError:
        pass
    except Exception as exc:
        raise KeyringUnavailable(
            f"The OS keyring could not delete the secret ({type(exc).__name__})."
        ) from None


# ------------------------------------------------------------------------------- the file


class ProfileStore:
    """The profiles file: read, add or replace, rename, delete; secrets go to the keyring.

    Every change rewrites the file atomically (readable by this user only). Profiles are kept
    in the order they were added.
    """

    HEADER = (
        "# Campaign Console connection profiles (campaign-console --profile NAME).\n"
        "# Secrets (tokens, passwords, nkey seeds) are kept in the OS keyring, never here.\n"
    )

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_profiles_path()

    def load(self) -> list[Profile]:
        """Every profile in the file (none when the file does not exist yet)."""
        raw: dict[str, Any] = {}
        try:
            raw = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileInvalid(
                f"The profiles file {self.path} could not be read: {exc}"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ProfileInvalid(
                f"The profiles file {self.path} is not valid TOML: {exc}"
            ) from None
        table = raw.get("profiles", {})
        if not isinstance(table, dict):
            raise ProfileInvalid(f"The profiles file {self.path}: [profiles] must be a table.")
        return [Profile.from_toml(name, value) for name, value in table.items()]

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.load())

    def names(self) -> list[str]:
        return [p.name for p in self.load()]

    def get(self, name: str) -> Profile:
        """The profile called ``name``; ``ProfileInvalid`` listing the known ones otherwise."""
        profiles = self.load()
        for profile in profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in profiles) or "none saved yet"
        raise ProfileInvalid(f"There is no connection profile {name!r} (profiles: {known}).")

    def save(self, profile: Profile, secret: str | None = None, *, replacing: str = "") -> Profile:
        """Add ``profile`` or replace the one called ``replacing`` (a rename when they differ).

        ``secret``: a new secret for the keyring; None keeps the one stored (moved along on a
        rename). A profile whose login needs no secret has its old secret deleted. Nothing is
        written when the profile is invalid, a name is taken, or the keyring refuses.
        """
        profile = profile.checked()
        profiles = self.load()
        names = [p.name for p in profiles]
        if replacing and replacing not in names:
            raise ProfileInvalid(f"There is no connection profile {replacing!r} to change.")
        if profile.name != replacing and profile.name in names:
            raise ProfileInvalid(f"A profile called {profile.name!r} exists already.")
        if secret is not None and secret != secret.strip():
            raise ProfileInvalid("The secret starts or ends with spaces: check what was pasted.")
        old = replacing or profile.name
        if profile.needs_secret:
            if secret:
                store_secret(profile.name, secret)
            else:
                kept = read_secret(old) if old in names else ""
                if not kept:
                    raise SecretMissing(
                        f"Type the {SECRET_KINDS[profile.auth]} for {profile.name!r}: the OS"
                        " keyring holds none for it yet."
                    )
                if profile.name != old:
                    store_secret(profile.name, kept)
        if old in names and (profile.name != old or not profile.needs_secret):
            delete_secret(old)
        if replacing:
            profiles[names.index(replacing)] = profile
        else:
            profiles.append(profile)
        self._write(profiles)
        return profile

    def delete(self, name: str) -> None:
        """Remove profile ``name`` and its secret."""
        profiles = self.load()
        if name not in [p.name for p in profiles]:
            raise ProfileInvalid(f"There is no connection profile {name!r} to delete.")
        delete_secret(name)
        self._write([p for p in profiles if p.name != name])

    def has_secret(self, name: str) -> bool:
        """Whether the keyring holds a secret for ``name`` (False without a keyring)."""
        try:
            return bool(read_secret(name))
        except KeyringUnavailable:
            return False

    def login(self, name: str) -> tuple[Profile, NatsLogin]:
        """Profile ``name`` and its login, the secret read from the keyring."""
        profile = self.get(name)
        secret = read_secret(profile.name) if profile.needs_secret else ""
        return profile, login_for(profile, secret)

    def _write(self, profiles: list[Profile]) -> None:
        lines = [self.HEADER]
        for profile in profiles:
            lines.append(f"\n[profiles.{_toml_string(profile.name)}]\n")
            for key, value in profile.to_toml().items():
                if isinstance(value, list):
                    text = "[" + ", ".join(_toml_string(v) for v in value) + "]"
                else:
                    text = _toml_string(str(value))
                lines.append(f"{key} = {text}\n")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(lines))
        os.replace(temporary, self.path)


def _toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's; DEL is escaped too (TOML needs it)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
