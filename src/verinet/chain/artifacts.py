"""Compile the Vyper contracts offline with the `vyper` package, with an on-disk cache.

Sources live in the repository's `contracts/` (shipped inside the wheel as
`verinet/_contracts`). snekmate's modules are found on `sys.path`, where pip put them.
Compiled ABI and bytecode are cached under `$VERINET_CACHE_DIR` (default
`~/.cache/verinet`) keyed by a hash of every source file, the vyper version and the
snekmate version, so a changed source is always recompiled.
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

CONTRACT_NAMES = (
    "Token",
    "Params",
    "NodeRegistry",
    "ModelRegistry",
    "InferenceMarket",
    "DisputeGame",
)


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes


def contracts_dir() -> Path:
    """Where the `.vy` sources are: the wheel's copy, else the source checkout's."""
    packaged = Path(__file__).resolve().parent.parent / "_contracts"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "contracts"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("Verinet's contract sources are missing from this installation")


def _cache_dir() -> Path:
    root = os.environ.get("VERINET_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "verinet"
    return base / "contracts"


def _fingerprint(src: Path) -> str:
    h = hashlib.sha256()
    h.update(metadata.version("vyper").encode())
    h.update(metadata.version("snekmate").encode())
    for path in sorted(src.glob("*.vy")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:24]


def _search_paths(src: Path) -> list[Path]:
    paths = [src]
    paths += [Path(p) for p in site.getsitepackages()]
    paths += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    return paths


def _compile(src: Path, name: str) -> dict[str, Any]:
    from vyper.compiler import compile_from_file_input
    from vyper.compiler.input_bundle import FilesystemInputBundle

    bundle = FilesystemInputBundle(_search_paths(src))
    file_input = bundle.load_file(Path(f"{name}.vy"))
    out = compile_from_file_input(
        file_input, input_bundle=bundle, output_formats=["abi", "bytecode"]
    )
    return {"abi": out["abi"], "bytecode": out["bytecode"]}


def _write_atomic(path: Path, payload: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(payload)
    os.replace(tmp, path)


@cache
def load(name: str) -> Artifact:
    """The compiled `name` contract (compiling it on first use)."""
    if name not in CONTRACT_NAMES:
        raise KeyError(f"unknown contract {name!r}; expected one of {CONTRACT_NAMES}")
    src = contracts_dir()
    path = _cache_dir() / f"{name}-{_fingerprint(src)}.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = _compile(src, name)
        _write_atomic(path, json.dumps(data))
    bytecode = bytes.fromhex(data["bytecode"].removeprefix("0x"))
    return Artifact(name=name, abi=tuple(data["abi"]), bytecode=bytecode)
