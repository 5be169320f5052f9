"""DiskStore, chunked files and CIDs: every read re-verified, every write atomic."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
from multiformats import CID, multihash

from verinet.errors import BlobMismatch, BlobNotFound, CorruptBlob, InvalidManifest, MalformedCid
from verinet.hub import cid as cids
from verinet.hub.cid import CHUNK_SIZE
from verinet.hub.files import ChunkList, chunks_of, file_cid, get_file, put_file
from verinet.hub.store import BlobStore, DiskStore
from verinet.types import Cid


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "store")


def _blob_path(store: DiskStore, cid: Cid) -> Path:
    return store.root / "blobs" / cid[-2:] / cid


def test_disk_store_is_a_blob_store(store: DiskStore) -> None:
    assert isinstance(store, BlobStore)


def test_put_get_has_size_iter_delete(store: DiskStore) -> None:
    a = store.put(b"alpha")
    b = store.put(b'{"k":1}', "json")
    assert a == cids.cid_of(b"alpha") and cids.codec_of(a) == "raw"
    assert cids.codec_of(b) == "json"
    assert store.has(a) and store.has(b)
    assert store.get(a) == b"alpha"
    assert store.size(b) == 7
    assert sorted(store) == sorted([a, b])
    store.delete(a)
    assert not store.has(a)
    assert list(store) == [b]
    with pytest.raises(BlobNotFound):
        store.get(a)
    with pytest.raises(BlobNotFound):
        store.size(a)
    store.delete(a)  # deleting what is absent is not an error


def test_put_is_idempotent(store: DiskStore) -> None:
    first = store.put(b"same bytes")
    mtime = _blob_path(store, first).stat().st_mtime_ns
    assert store.put(b"same bytes") == first
    assert _blob_path(store, first).stat().st_mtime_ns == mtime  # not rewritten
    assert list(store) == [first]


def test_writes_leave_no_temporary_files(store: DiskStore) -> None:
    for i in range(5):
        store.put(bytes([i]) * 1000)
    store.put_verified(cids.cid_of(b"peer"), b"peer")
    assert list((store.root / "tmp").iterdir()) == []


def test_failed_write_cleans_up_and_stores_nothing(
    store: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"never lands")
    monkeypatch.undo()
    assert list((store.root / "tmp").iterdir()) == []
    assert not store.has(cids.cid_of(b"never lands"))


def test_corrupt_blob_is_quarantined(store: DiskStore) -> None:
    cid = store.put(b"precious model weights")
    path = _blob_path(store, cid)
    damaged = bytearray(path.read_bytes())
    damaged[3] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptBlob):
        store.get(cid)
    assert not store.has(cid)
    assert (store.root / "quarantine" / cid).read_bytes() == bytes(damaged)
    with pytest.raises(BlobNotFound):
        store.get(cid)
    assert store.put(b"precious model weights") == cid  # a good copy can be stored again
    assert store.get(cid) == b"precious model weights"


def test_put_verified_refuses_wrong_bytes(store: DiskStore) -> None:
    cid = cids.cid_of(b"the real thing")
    with pytest.raises(BlobMismatch):
        store.put_verified(cid, b"an impostor")
    assert not store.has(cid)
    assert list(store) == []
    assert list((store.root / "tmp").iterdir()) == []
    store.put_verified(cid, b"the real thing")
    assert store.get(cid) == b"the real thing"


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 7 * CHUNK_SIZE // 2],
)
def test_files_round_trip(store: DiskStore, size: int) -> None:
    data = random.Random(size).randbytes(size)
    cid = put_file(store, data)
    assert cid == file_cid(data)
    assert get_file(store, cid) == data
    chunk_list = chunks_of(store, cid)
    if size <= CHUNK_SIZE:
        assert chunk_list is None
        assert cids.codec_of(cid) == "raw"
        assert list(store) == [cid]
    else:
        assert chunk_list is not None and chunk_list.size == size
        assert cids.codec_of(cid) == "json"
        assert len(chunk_list.chunks) == -(-size // CHUNK_SIZE)
        assert len(list(store)) == len(chunk_list.chunks) + 1
        assert ChunkList.parse(store.get(cid)) == chunk_list


def test_repeated_chunks_are_stored_once(store: DiskStore) -> None:
    block = random.Random(7).randbytes(CHUNK_SIZE)
    data = block * 3 + block[:10]
    cid = put_file(store, data)
    chunk_list = chunks_of(store, cid)
    assert chunk_list is not None
    assert len({chunk.cid for chunk in chunk_list.chunks}) == 2
    assert len(list(store)) == 3  # two distinct chunks and the chunk list
    assert get_file(store, cid) == data


def test_corrupt_chunk_fails_the_whole_file(store: DiskStore) -> None:
    data = random.Random(3).randbytes(CHUNK_SIZE + 100)
    cid = put_file(store, data)
    chunk_list = chunks_of(store, cid)
    assert chunk_list is not None
    path = _blob_path(store, chunk_list.chunks[1].cid)
    path.write_bytes(b"x" + path.read_bytes()[1:])
    with pytest.raises(CorruptBlob):
        get_file(store, cid)


def _chunk_list_json(**changes: object) -> bytes:
    document: dict[str, object] = {
        "type": "verinet.chunks/1",
        "chunk_size": CHUNK_SIZE,
        "size": CHUNK_SIZE + 5,
        "chunks": [
            {"cid": cids.cid_of(b"a"), "size": CHUNK_SIZE},
            {"cid": cids.cid_of(b"b"), "size": 5},
        ],
    }
    document.update(changes)
    return json.dumps(document).encode()


def test_chunk_list_parse_accepts_a_consistent_list() -> None:
    assert ChunkList.parse(_chunk_list_json()).size == CHUNK_SIZE + 5


@pytest.mark.parametrize(
    "changes",
    [
        {"size": CHUNK_SIZE + 6},  # sizes do not add up
        {"size": CHUNK_SIZE},  # a file this small is one raw blob, never a chunk list
        {"chunks": [{"cid": cids.cid_of(b"a"), "size": 5}, {"cid": cids.cid_of(b"b"), "size": 5}]},
        {"chunks": [{"cid": cids.cid_of(b"a"), "size": CHUNK_SIZE}]},  # one chunk missing
        {"chunk_size": CHUNK_SIZE // 2},
        {"type": "verinet.chunks/2"},
        {"extra": True},
        {
            "chunks": [
                {"cid": cids.cid_of(b"a", "json"), "size": CHUNK_SIZE},  # not a raw blob
                {"cid": cids.cid_of(b"b"), "size": 5},
            ]
        },
        {
            "chunks": [
                {"cid": cids.cid_of(b"a"), "size": CHUNK_SIZE, "offset": 0},  # extra field
                {"cid": cids.cid_of(b"b"), "size": 5},
            ]
        },
    ],
)
def test_chunk_list_parse_refuses(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidManifest):
        ChunkList.parse(_chunk_list_json(**changes))


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"type":"verinet.chunks/1"}'])
def test_chunk_list_parse_refuses_non_documents(data: bytes) -> None:
    with pytest.raises(InvalidManifest):
        ChunkList.parse(data)


def test_chunk_list_with_garbage_chunk_cid_is_an_invalid_manifest() -> None:
    data = _chunk_list_json(
        chunks=[{"cid": "garbage", "size": CHUNK_SIZE}, {"cid": cids.cid_of(b"b"), "size": 5}]
    )
    with pytest.raises(InvalidManifest):
        ChunkList.parse(data)


_SHA512_CID = str(CID("base32", 1, "raw", multihash.digest(b"x", "sha2-512")))
_DAG_PB_CID = str(
    CID("base32", 1, "dag-pb", multihash.wrap(hashlib.sha256(b"x").digest(), "sha2-256"))
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "bafkreiZZZ",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        _SHA512_CID,
        _DAG_PB_CID,
    ],
)
def test_malformed_cids_are_refused(text: str) -> None:
    with pytest.raises(MalformedCid):
        cids.parse(text)
    with pytest.raises(MalformedCid):
        cids.normalize(text)


def test_store_refuses_malformed_cids(store: DiskStore) -> None:
    with pytest.raises(MalformedCid):
        store.has(Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"))


@pytest.mark.parametrize("codec", ["raw", "json"])
def test_cid_binary_round_trip(codec: cids.Codec) -> None:
    cid = cids.cid_of(b"round trip", codec)
    raw = cids.to_bytes(cid)
    assert raw[0] == 0x01
    assert raw.endswith(hashlib.sha256(b"round trip").digest())
    assert cids.from_bytes(raw) == cid
    assert cids.digest_of(cid) == hashlib.sha256(b"round trip").digest()
    assert cids.matches(cid, b"round trip") and not cids.matches(cid, b"round trap")


def test_normalize_accepts_other_bases() -> None:
    cid = cids.cid_of(b"base")
    base58 = str(CID.decode(cid).set(base="base58btc"))
    assert base58 != cid
    assert cids.normalize(base58) == cid
