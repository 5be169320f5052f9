"""Files of any size over a `BlobStore`: small ones as one raw blob, large ones chunked.

A file up to `CHUNK_SIZE` bytes is a single ``raw`` blob and its CID is the blob's. A larger file
is cut into `CHUNK_SIZE` pieces, each stored as a ``raw`` blob, and described by a chunk list, a
canonical JSON document (codec ``json``)::

    {"chunk_size":1048576,"chunks":[{"cid":"bafk...","size":1048576},...],"size":N,
     "type":"verinet.chunks/1"}

whose CID is the file's. The rule is deterministic, so anyone holding the bytes recomputes the
same CID (`file_cid`), and each chunk can be fetched and checked on its own.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from verinet.errors import CorruptBlob, InvalidManifest, MalformedCid
from verinet.hub import cid as cids
from verinet.hub.cid import CHUNK_SIZE
from verinet.hub.store import BlobStore
from verinet.types import Cid

MAX_CHUNKS = 1 << 16
"""At most 64 Ki chunks (64 GiB) per file; a longer chunk list is refused as malformed."""


class ChunkRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cid: Cid
    size: int = Field(ge=1, le=CHUNK_SIZE)


class ChunkList(BaseModel):
    """The JSON document naming the chunks of a file larger than `CHUNK_SIZE`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["verinet.chunks/1"] = "verinet.chunks/1"
    chunk_size: Literal[1048576] = 1048576
    size: int = Field(gt=CHUNK_SIZE)
    chunks: tuple[ChunkRef, ...] = Field(max_length=MAX_CHUNKS)

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def parse(cls, data: bytes) -> ChunkList:
        try:
            chunk_list = cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidManifest(f"not a Verinet chunk list: {exc}") from None
        count = len(chunk_list.chunks)
        expected = [min(CHUNK_SIZE, chunk_list.size - i * CHUNK_SIZE) for i in range(count)]
        if [c.size for c in chunk_list.chunks] != expected or sum(expected) != chunk_list.size:
            raise InvalidManifest("chunk sizes do not add up to the file size in CHUNK_SIZE steps")
        for chunk in chunk_list.chunks:
            try:
                codec = cids.codec_of(chunk.cid)
            except MalformedCid as exc:
                raise InvalidManifest(f"chunk list names a bad chunk CID: {exc}") from None
            if codec != "raw":
                raise InvalidManifest(f"chunk {chunk.cid} is not a raw blob")
        return chunk_list


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form Verinet hashes JSON in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _chunk_list(data: bytes) -> ChunkList:
    chunks = tuple(
        ChunkRef(cid=cids.cid_of(data[i : i + CHUNK_SIZE]), size=len(data[i : i + CHUNK_SIZE]))
        for i in range(0, len(data), CHUNK_SIZE)
    )
    return ChunkList(size=len(data), chunks=chunks)


def file_cid(data: bytes) -> Cid:
    """The CID `put_file` would give `data`, computed without a store."""
    if len(data) <= CHUNK_SIZE:
        return cids.cid_of(data)
    return cids.cid_of(_chunk_list(data).canonical(), "json")


def put_file(store: BlobStore, data: bytes) -> Cid:
    """Store a file (chunked if large) and return its CID."""
    if len(data) <= CHUNK_SIZE:
        return store.put(data)
    chunk_list = _chunk_list(data)
    for offset in range(0, len(data), CHUNK_SIZE):
        store.put(data[offset : offset + CHUNK_SIZE])
    return store.put(chunk_list.canonical(), "json")


def chunks_of(store: BlobStore, cid: Cid) -> ChunkList | None:
    """The chunk list a file CID names, or None for a single-blob file."""
    if cids.codec_of(cid) == "raw":
        return None
    return ChunkList.parse(store.get(cid))


def get_file(store: BlobStore, cid: Cid) -> bytes:
    """The whole file, every chunk verified against its CID."""
    chunk_list = chunks_of(store, cid)
    if chunk_list is None:
        return store.get(cid)
    data = b"".join(store.get(chunk.cid) for chunk in chunk_list.chunks)
    if len(data) != chunk_list.size:  # a chunk whose bytes match its CID but not its listed size
        raise CorruptBlob(f"file {cid} reassembled to {len(data)} bytes, not {chunk_list.size}")
    return data
