"""The execution-trace commitment: a hash chain over ops and a Merkle tree over their outputs.

For a model with ops 1..N run in topological order on an input::

    h_0 = H(model_cid ‖ input_hash)
    h_i = H(h_{i-1} ‖ H_i)               H_i = hash of op i's outputs (canonical encoding)

Agreement on h_m means agreement on every op up to m, so a bisection over i finds the first op
two parties disagree on. The Merkle root over the H_i lets a party prove any op's outputs
(for instance the inputs of the disputed op) against its commitment::

    leaf_i = H(uint256(i) ‖ H_i)         (i from 1, so a leaf never equals a bare hash pair)
    node   = H(left ‖ right)             the leaves padded with zero words to a power of two

H is sha2-256 throughout, like the tensor hashes. The EVM has it as a precompile (Vyper's
``sha256``): a dispute checks ~log2(N) hashes, about 1-2k gas more than keccak in all, while
off-chain a 64-byte sha2-256 costs 0.3 us in Python against 3.5-5 us for keccak, which made the
chain and tree most of a traced run's overhead. Everything is 32-byte words so the same checks
are a few lines of Vyper.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from verinet.types import Hash32

ZERO = Hash32(bytes(32))


def _word(i: int) -> bytes:
    return i.to_bytes(32, "big")


def _h(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(data).digest())


def initial_link(model_cid: bytes, input_hash: Hash32) -> Hash32:
    """h_0: binds the chain to the model (binary CID) and the request's input hash."""
    return _h(model_cid + input_hash)


def next_link(previous: Hash32, op_hash: Hash32) -> Hash32:
    return _h(previous + op_hash)


def hash_chain(h0: Hash32, op_hashes: Sequence[Hash32]) -> list[Hash32]:
    """[h_0, h_1, ..., h_N]."""
    links = [h0]
    for op_hash in op_hashes:
        links.append(_h(links[-1] + op_hash))
    return links


def merkle_leaf(index: int, op_hash: Hash32) -> Hash32:
    """The leaf of op `index` (1-based)."""
    return _h(_word(index) + op_hash)


def _levels(op_hashes: Sequence[Hash32]) -> list[list[Hash32]]:
    level = [merkle_leaf(i, h) for i, h in enumerate(op_hashes, start=1)]
    width = 1
    while width < len(level):
        width *= 2
    level += [ZERO] * (width - len(level))
    levels = [level]
    while len(level) > 1:
        level = [_h(level[j] + level[j + 1]) for j in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(op_hashes: Sequence[Hash32]) -> Hash32:
    if not op_hashes:
        return ZERO
    return _levels(op_hashes)[-1][0]


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """Siblings from the leaf of op `index` (1-based) up to the root."""

    index: int
    siblings: tuple[Hash32, ...]


def merkle_proof(op_hashes: Sequence[Hash32], index: int) -> MerkleProof:
    if not 1 <= index <= len(op_hashes):
        raise IndexError(f"op index {index} outside 1..{len(op_hashes)}")
    position = index - 1
    siblings = []
    for level in _levels(op_hashes)[:-1]:
        siblings.append(level[position ^ 1])
        position //= 2
    return MerkleProof(index=index, siblings=tuple(siblings))


def verify_merkle_proof(root: Hash32, op_hash: Hash32, proof: MerkleProof) -> bool:
    """True if `op_hash` is op `proof.index`'s output hash under `root`."""
    if proof.index < 1 or proof.index > 1 << len(proof.siblings):
        return False
    node = merkle_leaf(proof.index, op_hash)
    position = proof.index - 1
    for sibling in proof.siblings:
        node = _h(node + sibling) if position % 2 == 0 else _h(sibling + node)
        position //= 2
    return node == root
