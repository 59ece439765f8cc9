"""Accounts, passwords and API keys on a real SQLite store."""

from __future__ import annotations

import bcrypt
import pytest

from biomaj.auth import keys, passwords
from biomaj.auth.users import UnknownUser, UserError, Users
from biomaj.storage.sqlite import SQLiteStore


@pytest.fixture
async def users(tmp_path):
    store = SQLiteStore(tmp_path / "biomaj.sqlite")
    async with store:
        yield Users(store, admins=frozenset({"root"}))


async def test_a_key_is_shown_once_and_stored_hashed(users: Users):
    user, key = await users.create("alice", email="alice@example.org")
    assert key.startswith(keys.PREFIX) and len(key) > 40
    identity = await users.by_api_key(key)
    assert identity is not None and (identity.name, identity.admin, identity.via) == ("alice", False, "apikey")
    assert await users.by_api_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await users.by_api_key("") is None
    stored = await users.store.get_user("alice")
    assert key not in repr(stored) and key not in repr(user)
    assert [k["id"] for k in user["api_keys"]] == [k["id"] for k in await users.store.list_api_keys("alice")]
    assert "hashed_password" not in user and "apikey" not in user


async def test_several_keys_and_revocation(users: Users):
    _, first = await users.create("alice")
    second_id, second = await users.new_api_key("alice", "laptop")
    assert (await users.by_api_key(first)).name == (await users.by_api_key(second)).name == "alice"
    await users.revoke_api_key("alice", second_id)
    assert await users.by_api_key(second) is None and await users.by_api_key(first) is not None
    with pytest.raises(UserError, match="has no API key"):
        await users.revoke_api_key("alice", second_id)


async def test_passwords_are_argon2_and_checked(users: Users):
    await users.create("alice", password="correct horse")
    stored = (await users.store.get_user("alice"))["hashed_password"]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert (await users.by_password("alice", "correct horse")).via == "password"
    assert await users.by_password("alice", "wrong horse") is None
    assert await users.by_password("alice", "") is None
    assert await users.by_password("nobody", "correct horse") is None
    with pytest.raises(passwords.WeakPassword):
        await users.set_password("alice", "short")


@pytest.mark.parametrize("legacy", ["plain", "python3-str-of-bytes"])
async def test_a_biomaj3_bcrypt_password_works_and_is_upgraded(users: Users, legacy: str):
    hashed = bcrypt.hashpw(b"old-secret", bcrypt.gensalt(rounds=4))
    stored = hashed.decode() if legacy == "plain" else str(hashed)  # BioMAJ 3 stored str() of the hash
    await users.store.create_user({"id": "legacy", "email": None, "is_ldap": False, "hashed_password": stored,
                                   "apikey": "ABCDEFGHIJ"})
    assert await users.by_password("legacy", "nope-nope") is None
    assert (await users.by_password("legacy", "old-secret")).name == "legacy"
    upgraded = (await users.store.get_user("legacy"))["hashed_password"]
    assert upgraded.startswith("$argon2id$")
    assert (await users.by_password("legacy", "old-secret")) is not None
    assert "apikey" not in await users.get("legacy")  # BioMAJ 3's clear key is never shown


async def test_admins_come_from_the_flag_and_the_configuration(users: Users):
    await users.create("root")
    await users.create("bob", admin=True)
    await users.create("carol")
    assert [(u["id"], u["is_admin"]) for u in await users.list()] == [("bob", True), ("carol", False),
                                                                      ("root", True)]
    await users.set_admin("bob", False)
    assert not (await users.get("bob"))["is_admin"]


async def test_bad_input_is_refused_clearly(users: Users):
    for name in ("", "a b", "-dash", "x" * 65, "../etc", "al\nice"):
        with pytest.raises(UserError, match="invalid user name"):
            await users.create(name)
    with pytest.raises(UserError, match="not an email"):
        await users.create("alice", email="not-an-email")
    await users.create("alice")
    with pytest.raises(UserError, match="already exists"):
        await users.create("alice")
    with pytest.raises(UnknownUser):
        await users.new_api_key("nobody")
    with pytest.raises(UnknownUser):
        await users.delete("nobody")
    assert await users.by_api_key("x" * 10_000) is None


async def test_deleting_a_user_revokes_its_keys(users: Users):
    _, key = await users.create("alice")
    await users.delete("alice")
    assert await users.by_api_key(key) is None
