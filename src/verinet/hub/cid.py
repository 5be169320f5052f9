"""Content identifiers: CIDv1 over sha2-256, as IPFS writes them.

Verinet names every blob by a CIDv1 whose multihash is sha2-256. Two codecs are used:

- ``raw`` (0x55) for bytes as they are: a model file up to `CHUNK_SIZE`, one chunk of a larger
  file, an input or output blob;
- ``json`` (0x0200) for JSON documents Verinet writes canonically (sorted keys, no spaces):
  model manifests and the chunk lists of files larger than `CHUNK_SIZE`.

Text form is base32 (``bafk...`` / ``baga...``); the chain stores the binary form (version,
codec varint, multihash), which `to_bytes` / `from_bytes` convert.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

from multiformats import CID, multihash

from verinet.errors import MalformedCid
from verinet.types import Cid

Codec = Literal["raw", "json"]
CODECS: Final[frozenset[str]] = frozenset({"raw", "json"})

CHUNK_SIZE: Final = 1 << 20
"""Files larger than this are split into chunks of exactly this size (the last may be shorter).
Part of the format: changing it changes the CID of every large file."""


def cid_of(data: bytes, codec: Codec = "raw") -> Cid:
    """The CID of `data` taken as one blob (no chunking)."""
    return _make(hashlib.sha256(data).digest(), codec)


def _make(digest: bytes, codec: str) -> Cid:
    cid = CID("base32", 1, codec, multihash.wrap(digest, "sha2-256"))
    return Cid(str(cid))


def parse(cid: str | bytes) -> CID:
    """Parse and check a CID (text or binary): version 1, sha2-256, a codec Verinet uses."""
    try:
        parsed = CID.decode(cid)
    except Exception as exc:  # multiformats raises several unrelated types
        raise MalformedCid(f"not a CID: {cid!r} ({exc})") from None
    if parsed.version != 1:
        raise MalformedCid(f"{cid!r} is CIDv{parsed.version}; Verinet uses CIDv1")
    if parsed.hashfun.name != "sha2-256" or len(parsed.raw_digest) != 32:
        raise MalformedCid(f"{cid!r} uses {parsed.hashfun.name}; Verinet uses sha2-256")
    if parsed.codec.name not in CODECS:
        raise MalformedCid(f"{cid!r} has codec {parsed.codec.name}; expected raw or json")
    return parsed


def normalize(cid: str | bytes) -> Cid:
    """The canonical base32 text form of a CID given as text (any base) or bytes."""
    return Cid(str(parse(cid).set(base="base32")))


def to_bytes(cid: str) -> bytes:
    """The binary CID stored on-chain (version byte 0x01, codec varint, multihash)."""
    return bytes(parse(cid))


def from_bytes(raw: bytes) -> Cid:
    """The text CID of a binary CID read from the chain."""
    return normalize(raw)


def codec_of(cid: str) -> Codec:
    name = parse(cid).codec.name
    return "raw" if name == "raw" else "json"


def digest_of(cid: str) -> bytes:
    """The 32-byte sha2-256 digest a CID names."""
    return bytes(parse(cid).raw_digest)


def matches(cid: str, data: bytes) -> bool:
    """True if `data` hashes to the digest `cid` names (the codec is not checked)."""
    return hashlib.sha256(data).digest() == digest_of(cid)
