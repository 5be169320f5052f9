"""The canonical tensor encoding: documented bytes, independent of memory layout."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from verinet.hub.manifest import ELEMENT_TYPES
from verinet.runtime.tensors import encode_tensor, group_hash, tensor_hash


def test_layout_of_one_tensor() -> None:
    encoded = encode_tensor(np.array([[1, 2, 3]], dtype=np.int32))
    assert encoded == struct.pack("<BBQQ3i", 6, 2, 1, 3, 1, 2, 3)


def test_bool_and_string_encodings() -> None:
    assert encode_tensor(np.array([True, False])) == struct.pack("<BBQ", 9, 1, 2) + b"\x01\x00"
    assert encode_tensor(np.array(["ab", "é"])) == (
        struct.pack("<BBQ", 8, 1, 2)
        + struct.pack("<I", 2)
        + b"ab"
        + struct.pack("<I", 2)
        + "é".encode()
    )


def test_scalar_has_rank_zero() -> None:
    assert encode_tensor(np.float32(1.5)) == struct.pack("<BB", 1, 0) + struct.pack("<f", 1.5)


def test_group_layout() -> None:
    a = np.arange(3, dtype=np.int64)
    expected = hashlib.sha256(
        struct.pack("<I", 1) + struct.pack("<H", 1) + b"a" + encode_tensor(a)
    ).digest()
    assert group_hash([("a", a)]) == expected == group_hash({"a": a})


def test_group_hash_binds_names_and_order() -> None:
    a, b = np.zeros(2, np.float32), np.ones(2, np.float32)
    assert group_hash([("a", a), ("b", b)]) != group_hash([("b", b), ("a", a)])
    assert group_hash([("a", a)]) != group_hash([("c", a)])


def test_dtype_and_shape_are_part_of_the_hash() -> None:
    zeros = np.zeros(4, np.float32)
    assert tensor_hash(zeros) != tensor_hash(zeros.view(np.int32))
    assert tensor_hash(zeros) != tensor_hash(zeros.reshape(2, 2))


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(TypeError, match="no canonical encoding"):
        tensor_hash(np.zeros(2, np.complex64))


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint16, np.int8, np.float16]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
    )
)
def test_hash_ignores_memory_layout_and_byte_order(array: np.ndarray) -> None:
    reference = tensor_hash(np.ascontiguousarray(array))
    assert tensor_hash(np.asfortranarray(array)) == reference
    assert tensor_hash(array.astype(array.dtype.newbyteorder(">"))) == reference
    if array.ndim >= 2:
        assert tensor_hash(array.T.copy().T) == reference
    assert encode_tensor(array)[0] == ELEMENT_TYPES[array.dtype.name]
