"""Connection profiles: the file holds no secret, the keyring does; bad input changes nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from console.errors import KeyringUnavailable
from console.profiles import (
    KEYRING_SERVICE,
    Profile,
    ProfileInvalid,
    ProfileStore,
    SecretMissing,
    login_for,
    parse_servers,
)
from tests.console.conftest import MemoryKeyring

TOKEN = "s3cr3t-token-\u00e9-42"


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    return ProfileStore(tmp_path / "config" / "connections.toml")


def test_a_token_profile_keeps_its_token_in_the_keyring_only(
    store: ProfileStore, memory_keyring: MemoryKeyring
) -> None:
    profile = Profile(
        name='Production "EU"',
        servers=["nats://nats-1.example.com:4222", "tls://nats-2.example.com:4443"],
        auth="token",
        tls_ca="/etc/ssl/eu.pem",
    )
    store.save(profile, TOKEN)
    text = store.path.read_text(encoding="utf-8")
    assert TOKEN not in text and "s3cr3t" not in text
    assert "keyring" in text.splitlines()[1]  # the file says where the secret is
    assert memory_keyring.secrets == {(KEYRING_SERVICE, 'profile:Production "EU"'): TOKEN}
    assert store.path.stat().st_mode & 0o077 == 0
    raw = tomllib.loads(text)["profiles"]['Production "EU"']
    assert raw["servers"] == profile.servers and raw["auth"] == "token"
    loaded, login = store.login('Production "EU"')
    assert loaded == profile
    assert login.token == TOKEN and login.tls  # tls:// asks for TLS
    assert TOKEN not in repr(login)


def test_rename_moves_the_secret_and_delete_forgets_it(
    store: ProfileStore, memory_keyring: MemoryKeyring
) -> None:
    store.save(Profile("staging", ["nats://10.0.0.5:4222"], auth="user", user="ops"), "pw-1")
    # Editing without typing the password keeps the stored one, under the new name.
    store.save(
        Profile("staging-eu", ["nats://10.0.0.5:4222"], auth="user", user="ops"),
        None,
        replacing="staging",
    )
    assert store.names() == ["staging-eu"]
    assert memory_keyring.secrets == {(KEYRING_SERVICE, "profile:staging-eu"): "pw-1"}
    # A login without a secret drops the old one.
    store.save(Profile("staging-eu", ["nats://10.0.0.5:4222"]), None, replacing="staging-eu")
    assert memory_keyring.secrets == {}
    store.save(Profile("prod", ["nats://10.0.0.6:4222"], auth="nkey", user="mo"), "SUAXXX")
    # An nkey profile keeps its user's name: the console's control requests carry it, and
    # NATS gets the seed alone.
    assert store.get("prod").user == "mo"
    login = login_for(store.get("prod"), "SUAXXX")
    assert login.user == "mo" and "user" not in login.connect_options()
    store.delete("prod")
    assert store.names() == ["staging-eu"] and memory_keyring.secrets == {}


@pytest.mark.parametrize(
    ("servers", "words"),
    [
        ("nats//broken:4222", "needs a scheme"),
        ("http://nats.example.com:4222", "is not one NATS speaks"),
        ("nats://token@nats.example.com:4222", "carries a login"),
        ("nats://ops:pw@nats.example.com:4222", "carries a login"),
        ("nats://nats.example.com:99999", "port must be a number"),
        ("nats://nats.example.com:abc", "port must be a number"),
        ("nats://:4222", "names no host"),
        ("nats://nats.example.com:4222/x", "no path"),
        ("", "at least one NATS URL"),
    ],
)
def test_bad_urls_are_refused_in_words(servers: str, words: str) -> None:
    with pytest.raises(ProfileInvalid) as refused:
        parse_servers(servers)
    assert words in str(refused.value)
    assert "pw" not in str(refused.value).replace("password", "")


def test_bad_profiles_change_nothing(store: ProfileStore, memory_keyring: MemoryKeyring) -> None:
    store.save(Profile("prod", ["nats://10.0.0.6:4222"], auth="token"), TOKEN)
    before = store.path.read_bytes()
    cases = [
        (Profile("", ["nats://a:4222"]), None, "Give the profile a name"),
        (Profile("Local stack", ["nats://a:4222"]), None, "reserved for the local stack"),
        (Profile("x\ny", ["nats://a:4222"]), None, "control characters"),
        (Profile("prod", ["nats://a:4222"]), None, "exists already"),
        (Profile("new", ["nats://a:4222"], auth="user"), "pw", "needs the user name"),
        (Profile("new", ["nats://a:4222"], auth="nkey"), "SUA", "needs the user name too"),
        (Profile("new", ["nats://a:4222"], auth="creds"), None, "needs the file's path"),
        (Profile("new", ["nats://a:4222"], auth="kerberos"), None, "Unknown login kind"),
        (Profile("new", ["nats://a:4222"], auth="token"), None, "Type the token"),
        (Profile("new", ["nats://a:4222"], auth="token"), " pasted ", "starts or ends with"),
    ]
    for profile, secret, words in cases:
        with pytest.raises((ProfileInvalid, SecretMissing)) as refused:
            store.save(profile, secret)
        assert words in str(refused.value), (profile, str(refused.value))
    assert store.path.read_bytes() == before
    assert memory_keyring.secrets == {(KEYRING_SERVICE, "profile:prod"): TOKEN}


def test_no_keyring_is_a_clear_error_never_a_plaintext_file(store: ProfileStore) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(KeyringUnavailable) as missing:
            store.save(Profile("prod", ["nats://10.0.0.6:4222"], auth="token"), TOKEN)
        assert "never keeps a token or password in a plain file" in str(missing.value)
        assert not store.path.exists()
        # A profile without a secret needs no keyring.
        store.save(Profile("open", ["nats://10.0.0.7:4222"]))
        assert store.names() == ["open"]
    finally:
        keyring.set_keyring(previous)


def test_a_broken_profiles_file_is_named(store: ProfileStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text('[profiles.prod]\nservers = ["nats://a:4222"\n', encoding="utf-8")
    with pytest.raises(ProfileInvalid) as broken:
        store.load()
    assert "is not valid TOML" in str(broken.value) and str(store.path) in str(broken.value)
    store.path.write_text('[profiles.prod]\nservers = ["nats://a:4222"]\ncolor = 1\n')
    with pytest.raises(ProfileInvalid) as unknown:
        store.load()
    assert "Profile 'prod' has unknown fields: color" in str(unknown.value)
    with pytest.raises(ProfileInvalid) as absent:
        ProfileStore(store.path.parent / "none.toml").get("prod")
    assert "There is no connection profile 'prod' (profiles: none saved yet)" in str(absent.value)


def test_a_missing_secret_or_file_is_named_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(SecretMissing) as missing:
        login_for(Profile("prod", ["nats://a:4222"], auth="token"), "")
    assert "logs in with a token, but none is stored" in str(missing.value)
    creds = login_for(
        Profile("prod", ["nats://a:4222"], auth="creds", creds_file=str(tmp_path / "u.creds")), ""
    )
    with pytest.raises(ProfileInvalid) as no_file:
        creds.connect_options()
    assert "The credentials file" in str(no_file.value) and "does not exist" in str(no_file.value)
    (tmp_path / "ca.pem").write_text("not a certificate")
    bad_ca = login_for(Profile("prod", ["nats://a:4222"], tls_ca=str(tmp_path / "ca.pem")), "")
    with pytest.raises(ProfileInvalid) as unreadable:
        bad_ca.connect_options()
    assert "could not be read as PEM certificates" in str(unreadable.value)
