"""Compiling Solidity with the npm package `solc` (solcjs), which works offline.

ezkl writes the EVM verifier's Solidity but compiles it with a solc binary it downloads; we
compile the file with the solcjs that `./dev setup` installs into the repository's
`node_modules` (`npm ci`), through `node` and the standard-JSON interface.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from verinet.errors import ConfigError, VerifierBuildFailed

EIP170_LIMIT: Final = 24_576
"""Most bytes of runtime code a contract may have (EIP-170)."""

RUNS_TO_TRY: Final = (200, 50, 1)
"""Optimizer `runs` settings, best gas first; the first whose code fits EIP-170 is kept."""

_COMPILE_JS: Final = """
const solc = require(process.argv[1]);
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const output = JSON.parse(solc.compile(input));
  process.stdout.write(JSON.stringify({ version: solc.version(), output }));
});
"""


@dataclass(frozen=True, slots=True)
class Contract:
    """One compiled contract and the settings that produced it (enough to reproduce it)."""

    name: str
    bytecode: bytes
    """Init code: what a deployment transaction carries."""
    runtime: bytes
    abi: tuple[dict[str, Any], ...]
    method_ids: dict[str, bytes]
    """Function signature, e.g. ``verifyProof(bytes,uint256[])``, to its 4-byte selector."""
    solc_version: str
    optimizer_runs: int
    evm_version: str


def find_solcjs() -> tuple[Path, Path]:
    """(node executable, solc package folder).

    The package: `$VERINET_SOLCJS`, else `node_modules/solc` in a folder above this file or
    the working directory. Raises `ConfigError` when either is missing.
    """
    node = shutil.which("node")
    if node is None:
        raise ConfigError(
            "node not found on PATH: install Node.js (18 or later) to compile verifiers"
        )
    override = os.environ.get("VERINET_SOLCJS")
    if override:
        if not (Path(override) / "package.json").is_file():
            raise ConfigError(
                f"VERINET_SOLCJS={override!r} is not the folder of the npm solc package"
            )
        return Path(node), Path(override)
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            package = folder / "node_modules" / "solc"
            if (package / "package.json").is_file():
                return Path(node), package
    raise ConfigError(
        "solcjs not found: run `./dev setup` (it runs `npm ci`, which installs the npm package "
        "solc), or set VERINET_SOLCJS to the folder of an installed solc package"
    )


def compile_source(source: str, *, runs: int, evm_version: str) -> list[Contract]:
    """Every contract in one Solidity source, optimizer on with `runs`."""
    node, package = find_solcjs()
    request = {
        "language": "Solidity",
        "sources": {"source.sol": {"content": source}},
        "settings": {
            "optimizer": {"enabled": True, "runs": runs},
            "evmVersion": evm_version,
            "outputSelection": {
                "*": {
                    "*": [
                        "abi",
                        "evm.bytecode.object",
                        "evm.deployedBytecode.object",
                        "evm.methodIdentifiers",
                    ]
                }
            },
        },
    }
    done = subprocess.run(
        [str(node), "-e", _COMPILE_JS, str(package)],
        input=json.dumps(request).encode(),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise VerifierBuildFailed(
            f"solcjs exited with status {done.returncode}: "
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    answer = json.loads(done.stdout)
    output = answer["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        text = "\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors)
        raise VerifierBuildFailed(f"solc {answer['version']} refused the source:\n{text[:4000]}")
    return [
        Contract(
            name=name,
            bytecode=bytes.fromhex(compiled["evm"]["bytecode"]["object"]),
            runtime=bytes.fromhex(compiled["evm"]["deployedBytecode"]["object"]),
            abi=tuple(compiled["abi"]),
            method_ids={
                signature: bytes.fromhex(selector)
                for signature, selector in compiled["evm"]["methodIdentifiers"].items()
            },
            solc_version=answer["version"],
            optimizer_runs=runs,
            evm_version=evm_version,
        )
        for contracts in output.get("contracts", {}).values()
        for name, compiled in contracts.items()
    ]


def compile_within_limit(source: str, *, function: str, evm_version: str) -> Contract:
    """The contract in `source` that has `function` (a name, e.g. ``verifyProof``), compiled
    with the highest `RUNS_TO_TRY` setting whose runtime code fits EIP-170.

    Raises `VerifierBuildFailed` when no contract has the function or none of the settings
    makes it fit.
    """
    sizes: list[str] = []
    for runs in RUNS_TO_TRY:
        found = [
            contract
            for contract in compile_source(source, runs=runs, evm_version=evm_version)
            if any(signature.startswith(f"{function}(") for signature in contract.method_ids)
        ]
        if len(found) != 1:
            raise VerifierBuildFailed(
                f"expected one contract with a {function}() function, found {len(found)}"
            )
        if len(found[0].runtime) <= EIP170_LIMIT:
            return found[0]
        sizes.append(f"runs={runs}: {len(found[0].runtime)} bytes")
    raise VerifierBuildFailed(
        f"the verifier's runtime code exceeds the EIP-170 limit of {EIP170_LIMIT} bytes "
        f"({'; '.join(sizes)}); use a smaller model (fewer circuit columns and lookups)"
    )
