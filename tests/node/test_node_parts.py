"""The node's parts on their own: wire format, job database, config, keystore."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import after_killing_parent, job_record
from verinet.errors import ConfigError, InputTooLarge, MalformedTensor
from verinet.node.config import NodeSettings
from verinet.node.db import JobDB, Stage
from verinet.node.keys import create_keystore, load_keystore
from verinet.runtime.tensors import group_hash
from verinet.runtime.wire import (
    decode_group,
    encode_group,
    group_from_json,
    group_to_json,
    tensor_from_json,
)
from verinet.types import JobId

LIMIT = 1 << 20


def test_wire_round_trip_keeps_the_hash() -> None:
    group = {
        "x": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "ids": np.array([[1, -2]], dtype=np.int64),
        "mask": np.array([True, False, True]),
        "text": np.array(["a", "é"], dtype=object),
    }
    blob = encode_group(group)
    assert hashlib.sha256(blob).digest() == group_hash(group)
    back = decode_group(blob)
    assert group_hash(back) == group_hash(group)
    again = group_from_json(json.loads(json.dumps(group_to_json(group))), max_bytes=LIMIT)
    assert group_hash(again) == group_hash(group)
    assert np.array_equal(again["x"], group["x"])


def test_wire_reads_nested_lists_and_big_endian_free_b64() -> None:
    listed = tensor_from_json(
        {"dtype": "float32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}, max_bytes=LIMIT
    )
    raw = np.array([1, 2, 3, 4], dtype="<f4").tobytes()
    packed = tensor_from_json(
        {"dtype": "float32", "shape": [2, 2], "b64": base64.b64encode(raw).decode()},
        max_bytes=LIMIT,
    )
    assert listed.dtype == packed.dtype == np.float32
    assert np.array_equal(listed, packed)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"dtype": "float32", "shape": [3], "data": [1, 2]}, "needs 3"),
        ({"dtype": "float99", "shape": [1], "data": [1]}, "dtype"),
        ({"dtype": ["float32"], "shape": [1], "data": [1]}, "dtype"),
        ({"dtype": {"name": "float32"}, "shape": [1], "data": [1]}, "dtype"),
        ({"dtype": "int8", "shape": [1], "data": [300]}, "int8"),
        ({"dtype": "int32", "shape": [1], "data": [1.5]}, "integers"),
        ({"dtype": "float32", "shape": [2], "b64": "AAAA"}, "needs 8"),
        ({"dtype": "float32", "shape": [1], "b64": "not base64!"}, "base64"),
        ({"dtype": "float32", "shape": [-1], "data": []}, "non-negative"),
        ({"dtype": "float32", "shape": [1], "data": [1], "b64": ""}, "exactly one"),
        ({"dtype": "float32", "shape": [1], "data": ["1"]}, "numbers"),
        ({"dtype": "float32", "shape": [1], "values": [1]}, "unknown field"),
        ([1, 2, 3], "expected an object"),
    ],
)
def test_wire_refuses_malformed_tensors_with_a_hint(tensor: object, message: str) -> None:
    with pytest.raises(MalformedTensor, match=message):
        tensor_from_json(tensor, max_bytes=LIMIT)


def test_wire_bounds_allocation_before_decoding() -> None:
    with pytest.raises(InputTooLarge, match="over the limit"):
        tensor_from_json({"dtype": "float64", "shape": [1 << 40], "b64": ""}, max_bytes=LIMIT)


def test_wire_refuses_deep_nesting_without_recursion() -> None:
    data: list[object] = [1.0]
    for _ in range(10_000):
        data = [data]
    with pytest.raises(MalformedTensor, match="nested deeper"):
        tensor_from_json({"dtype": "float32", "shape": [1], "data": data}, max_bytes=LIMIT)


@pytest.mark.parametrize("cut", [1, 5, 10, 20])
def test_decode_group_refuses_truncated_blobs(cut: int) -> None:
    blob = encode_group({"x": np.ones((2, 3), dtype=np.float32)})
    with pytest.raises(MalformedTensor):
        decode_group(blob[:-cut])
    with pytest.raises(MalformedTensor, match="after the tensors"):
        decode_group(blob + b"\0")


def test_job_db_survives_a_reopen(tmp_path: Path) -> None:
    db = JobDB(tmp_path / "jobs.sqlite")
    assert db.insert(job_record(1)) and db.insert(job_record(2))
    assert not db.insert(job_record(1))  # seen once, kept once
    db.update(JobId(1), stage=Stage.COMMITTING, salt=b"s" * 32, output_hash=b"o" * 32)
    db.update(JobId(2), stage=Stage.DONE, outcome="PAID")
    db.set_cursor(42)
    db.close()

    again = JobDB(tmp_path / "jobs.sqlite")
    record = again.get(JobId(1))
    assert record is not None
    assert record.stage == Stage.COMMITTING and record.salt == b"s" * 32
    assert [r.job_id for r in again.active()] == [1]
    assert again.cursor() == 42
    assert "salt" not in record.to_json()  # never served before the reveal


def test_settings_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('port = 9000\nworkers = 2\n[chain]\nurl = "http://127.0.0.1:1"\n')
    monkeypatch.setenv("VERINET_WORKERS", "3")
    monkeypatch.setenv("VERINET_CHAIN__POLL_INTERVAL", "0.25")
    settings = NodeSettings.load(config, port=9100)
    assert settings.port == 9100  # flag
    assert settings.workers == 3  # env over file
    assert settings.chain.url == "http://127.0.0.1:1"  # file
    assert settings.chain.poll_interval == 0.25
    with pytest.raises(FileNotFoundError):
        NodeSettings.load(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="workers"):
        NodeSettings.load(config, workers=0)


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    account = create_keystore(path, "correct horse", scrypt_n=2**4)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "correct horse" not in path.read_text()
    assert load_keystore(path, "correct horse").address == account.address
    with pytest.raises(ConfigError, match="wrong password"):
        load_keystore(path, "wrong")
    with pytest.raises(ConfigError, match="never overwritten"):
        create_keystore(path, "again")


_ORPHAN = """
import asyncio, os
from verinet.node.daemon import watch_parent

async def main():
    stop = asyncio.Event()
    parent = os.getppid()
    print("watching", flush=True)
    gone = await watch_parent(stop, parent, 0.05)
    print("parent gone" if gone and stop.is_set() else "still here", flush=True)

asyncio.run(main())
"""
_PARENT = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", {_ORPHAN!r}])
sys.stdin.read()  # until killed
"""


def test_watch_parent_stops_an_orphan_when_its_parent_is_killed() -> None:
    # parent -> watcher; SIGKILL the parent: the watcher, now an orphan, sets stop and ends.
    assert after_killing_parent(_PARENT, b"watching\n") == b"parent gone\n"
