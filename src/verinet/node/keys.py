"""Node keys in an encrypted eth-account keystore (Web3 Secret Storage, scrypt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from verinet.errors import ConfigError

PASSWORD_ENV = "VERINET_KEYSTORE_PASSWORD"
DEV_SCRYPT_N = 2**12
"""scrypt cost for devnet keystores (fast to open; the default 2**18 takes ~1 s)."""


def create_keystore(
    path: Path, password: str, *, account: LocalAccount | None = None, scrypt_n: int | None = None
) -> LocalAccount:
    """Write `account` (default: a new random key) to `path`, encrypted; refuses to overwrite."""
    if path.exists():
        raise ConfigError(f"{path} exists; a keystore is never overwritten")
    account = account or Account.create()
    kwargs = {"iterations": scrypt_n} if scrypt_n else {}
    data = Account.encrypt(account.key, password, kdf="scrypt", **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    return account


def load_keystore(path: Path, password: str | None = None) -> LocalAccount:
    """The account in `path`; the password defaults to ``$VERINET_KEYSTORE_PASSWORD``."""
    password = password if password is not None else os.environ.get(PASSWORD_ENV)
    if password is None:
        raise ConfigError(f"set {PASSWORD_ENV} (or pass a password file) to open {path}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"keystore {path} does not exist; create one with `verinet node init`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"keystore {path} is not JSON: {exc}") from None
    try:
        key = Account.decrypt(data, password)
    except ValueError:
        raise ConfigError(f"wrong password for keystore {path}") from None
    account: LocalAccount = Account.from_key(key)
    return account
