"""Route passwords in the OS keyring (``keyring``); never in settings, logs or the database.

A machine without a usable keyring backend gets a ConfigError that says how to fix it, never a
plaintext fallback.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError

_NO_BACKEND = (
    "no usable OS keyring backend for route passwords ({backend}); install and unlock one "
    "(Secret Service / GNOME Keyring or KWallet on Linux, Keychain on macOS, Credential Manager "
    "on Windows) or select one with PYTHON_KEYRING_BACKEND; passwords are never kept in files"
)


def _keyring() -> Any:
    import keyring  # slow to import (backend discovery): only when a route has a login

    return keyring


def require_backend() -> Any:
    """The keyring backend in use, or a ConfigError when there is none that can hold secrets."""
    keyring = _keyring()
    from keyring.backends import chainer, fail, null

    backend = keyring.get_keyring()
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    if isinstance(backend, fail.Keyring | null.Keyring):
        raise ConfigError(_NO_BACKEND.format(backend=name))
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        raise ConfigError(_NO_BACKEND.format(backend=name + " with no viable backend"))
    return backend


def load_password(route: str, service: str, username: str) -> str:
    """The password of ``username`` for ``route``; a ConfigError naming the fix when missing."""
    backend = require_backend()
    try:
        value = backend.get_password(service, username)
    except Exception as exc:  # a locked or broken keyring: say which, never what it held
        raise ConfigError(
            f"routes.{route}: cannot read the password from the OS keyring "
            f"({type(exc).__name__}); unlock the keyring or run "
            f"'campaign-engine routes set-password {route}'"
        ) from None
    if not value:
        raise ConfigError(
            f"routes.{route}: no password in the OS keyring for {username!r} (service "
            f"{service!r}); run 'campaign-engine routes set-password {route}'"
        )
    return str(value)


def store_password(route: str, service: str, username: str, password: str) -> None:
    backend = require_backend()
    try:
        backend.set_password(service, username, password)
    except Exception as exc:
        raise ConfigError(
            f"routes.{route}: the OS keyring refused the password ({type(exc).__name__})"
        ) from None


def has_password(service: str, username: str) -> bool:
    """Whether a password is stored (for listing; False when there is no keyring)."""
    try:
        backend = require_backend()
        return bool(backend.get_password(service, username))
    except Exception:
        return False
