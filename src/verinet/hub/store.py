"""Blob stores: bytes by CID, checked on the way in and on every way out.

`BlobStore` is the seam (a Protocol); `DiskStore` is the on-disk implementation. A blob is
written to a temporary file in the same directory tree, fsynced, then renamed into place (and the
directory fsynced), so a crash leaves either the whole blob or nothing. Every read re-hashes the
bytes against the CID: a blob damaged on disk is moved to ``quarantine/`` and `CorruptBlob` is
raised rather than handing wrong bytes to a runtime or a peer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from verinet.errors import BlobMismatch, BlobNotFound, CorruptBlob
from verinet.hub import cid as cids
from verinet.hub.cid import Codec
from verinet.types import Cid


@runtime_checkable
class BlobStore(Protocol):
    """Bytes addressed by CID. Implementations verify every blob they return."""

    def has(self, cid: Cid) -> bool: ...

    def get(self, cid: Cid) -> bytes:
        """The blob's bytes, verified against `cid`; `BlobNotFound` / `CorruptBlob` otherwise."""
        ...

    def size(self, cid: Cid) -> int:
        """The blob's length in bytes without reading it; `BlobNotFound` if absent."""
        ...

    def put(self, data: bytes, codec: Codec = "raw") -> Cid:
        """Store `data` and return its CID (idempotent)."""
        ...

    def put_verified(self, cid: Cid, data: bytes) -> None:
        """Store bytes received for `cid` (e.g. from a peer); `BlobMismatch` if they differ."""
        ...

    def delete(self, cid: Cid) -> None: ...

    def __iter__(self) -> Iterator[Cid]: ...


class DiskStore:
    """A `BlobStore` in a directory: ``blobs/<xx>/<cid>``, ``tmp/``, ``quarantine/``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"
        self._quarantine = self.root / "quarantine"
        for directory in (self._blobs, self._tmp, self._quarantine):
            directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DiskStore({str(self.root)!r})"

    def _path(self, cid: Cid) -> Path:
        text = cids.normalize(cid)
        return self._blobs / text[-2:] / text

    def has(self, cid: Cid) -> bool:
        return self._path(cid).is_file()

    def size(self, cid: Cid) -> int:
        try:
            return self._path(cid).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {cid} in {self}") from None

    def get(self, cid: Cid) -> bytes:
        path = self._path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {cid} in {self}") from None
        if not cids.matches(cid, data):
            target = self._quarantine / path.name
            with contextlib.suppress(OSError):
                os.replace(path, target)
            raise CorruptBlob(
                f"blob {cid} on disk does not hash to its CID; moved to {target}, fetch it again"
            )
        return data

    def put(self, data: bytes, codec: Codec = "raw") -> Cid:
        cid = cids.cid_of(data, codec)
        if not self.has(cid):
            self._write(self._path(cid), data)
        return cid

    def put_verified(self, cid: Cid, data: bytes) -> None:
        if not cids.matches(cid, data):
            raise BlobMismatch(f"received {len(data)} bytes that do not hash to {cid}")
        path = self._path(cid)
        if not path.is_file():
            self._write(path, data)

    def delete(self, cid: Cid) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(cid).unlink()

    def __iter__(self) -> Iterator[Cid]:
        for path in sorted(self._blobs.glob("*/*")):
            yield Cid(path.name)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
