"""How CLI commands find a network: a running devnet's description, or explicit flags."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from verinet.errors import ConfigError

DEFAULT_DEVNET_DIR = Path(".verinet/devnet")


@dataclass(frozen=True, slots=True)
class Network:
    rpc_url: str
    contracts: dict[str, str]
    account: LocalAccount
    description: dict[str, Any]
    hub: tuple[Path, str] | None = None
    """A devnet's hub: its store's folder and URL (nodes fetch inputs sent by CID there)."""

    def model_id(self, model: str) -> int:
        """A model by id, or by a sample's name on a devnet."""
        if model.isdigit():
            return int(model)
        names: dict[str, int] = self.description.get("models", {})
        if model not in names:
            raise ConfigError(f"unknown model {model!r}: give an id or one of {sorted(names)}")
        return names[model]


def load_network(
    devnet_dir: Path | None,
    *,
    rpc_url: str | None = None,
    contracts_file: Path | None = None,
    keystore: Path | None = None,
    as_owner: bool = False,
) -> Network:
    """The network to talk to: `--rpc-url/--contracts/--keystore`, else the devnet's
    ``devnet.json`` (written by ``verinet devnet up``) and its first client's dev key."""
    description: dict[str, Any] = {}
    path = (devnet_dir or DEFAULT_DEVNET_DIR) / "devnet.json"
    hub = None
    if path.is_file():
        description = json.loads(path.read_text())
        if "hub_url" in description:
            hub = (path.parent / "hub", str(description["hub_url"]))
    elif rpc_url is None:
        raise ConfigError(
            f"no devnet at {path.parent} (start one with `verinet devnet up`) and no --rpc-url"
        )
    url = rpc_url or description["rpc_url"]
    contracts = (
        json.loads(contracts_file.read_text()) if contracts_file else description.get("contracts")
    )
    if not contracts:
        raise ConfigError("give --contracts (a JSON file of contract name → address)")
    if keystore is not None:
        from verinet.node.keys import load_keystore

        account = load_keystore(keystore)
    elif description:
        who = description["model_owner"] if as_owner else description["clients"][0]
        account = Account.from_key(who["private_key"])
    elif os.environ.get("VERINET_PRIVATE_KEY"):
        account = Account.from_key(os.environ["VERINET_PRIVATE_KEY"])
    else:
        raise ConfigError("give --keystore (or set VERINET_PRIVATE_KEY) to sign transactions")
    return Network(url, dict(contracts), account, description, hub)
