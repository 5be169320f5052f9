"""Domain scalars shared across Verinet (as web3.py's `types.py` does)."""

from __future__ import annotations

from typing import NewType

Address = NewType("Address", str)
"""A checksummed 0x-prefixed 20-byte address."""
TxHash = NewType("TxHash", str)
"""A 0x-prefixed 32-byte transaction hash (embedded chain: a local transaction id)."""
JobId = NewType("JobId", int)
ModelId = NewType("ModelId", int)
Wei = NewType("Wei", int)
"""An amount in the token's smallest unit."""
Hash32 = NewType("Hash32", bytes)
"""A 32-byte digest (keccak or sha256)."""
Cid = NewType("Cid", str)
"""A CIDv1 (sha2-256) in its base32 text form, e.g. ``bafkrei...``; `verinet.hub.cid` converts."""
