"""zk mode's on-chain commitments as pure functions, the Python twin of
`InferenceMarket.request_zk` and `submit_proof`.

A zk job commits to the circuit's input instances and settles on its output instances, both
hashed as the contract hashes them: keccak256 of the values abi-packed, 32 bytes big-endian
each. `MAX_PROOF` and `MAX_INSTANCES` are the contract's bounds on `submit_proof`'s arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from eth_utils.crypto import keccak

from verinet.types import Hash32

MAX_PROOF: Final = 16_384
"""Most bytes of a proof `submit_proof` takes (InferenceMarket.MAX_PROOF)."""
MAX_INSTANCES: Final = 1_024
"""Most public instances, inputs and outputs together (InferenceMarket.MAX_INSTANCES)."""


def instances_hash(values: Sequence[int]) -> Hash32:
    """keccak256 of `values` abi-packed as uint256: what `request_zk` commits to for the
    input instances and what a paid zk job's result is for the output instances."""
    for value in values:
        if not 0 <= value < 1 << 256:
            raise ValueError(f"instance {value} is not a uint256")
    return Hash32(keccak(b"".join(value.to_bytes(32, "big") for value in values)))


def split_instances(
    instances: Sequence[int], input_count: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input instances, output instances) of a proof whose first `input_count` are inputs."""
    if not 0 < input_count < len(instances):
        raise ValueError(
            f"a proof with {len(instances)} instances cannot have {input_count} inputs and "
            "at least one output"
        )
    return tuple(instances[:input_count]), tuple(instances[input_count:])
