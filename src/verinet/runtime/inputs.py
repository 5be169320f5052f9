"""Checking a request's tensors against a model's declared inputs, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verinet.errors import (
    DtypeMismatch,
    InputTooLarge,
    InvalidInput,
    MissingInput,
    NonFiniteInput,
    ShapeMismatch,
    UnexpectedInput,
)
from verinet.hub.manifest import InputPolicy, TensorSpec
from verinet.runtime.tensors import Array, dtype_name


def validate_inputs(
    specs: Sequence[TensorSpec], policy: InputPolicy, inputs: Mapping[str, Any]
) -> dict[str, Array]:
    """The inputs in declared order, each checked for presence, size, dtype, shape (with
    symbolic dimensions bound consistently across inputs) and finiteness.

    Raises a subclass of `InvalidInput` whose message says which input and how to fix it.
    """
    if not isinstance(inputs, dict) and not isinstance(inputs, Mapping):
        raise InvalidInput(
            f"inputs must be a mapping of name to array, not {type(inputs).__name__}"
        )
    declared = [spec.name for spec in specs]
    missing = [name for name in declared if name not in inputs]
    if missing:
        raise MissingInput(f"missing input(s) {missing}; the model takes {declared}")
    extra = sorted(str(name) for name in inputs if name not in declared)
    if extra:
        raise UnexpectedInput(f"unexpected input(s) {extra}; the model takes {declared}")

    arrays: dict[str, Array] = {}
    for spec in specs:
        value = inputs[spec.name]
        if not isinstance(value, np.ndarray):
            raise InvalidInput(
                f"input {spec.name!r} is a {type(value).__name__}; pass a numpy array "
                f"(numpy.asarray(value, dtype={spec.dtype!r}))"
            )
        arrays[spec.name] = _canonical_layout(spec, value)
    total = sum(_size(array) for array in arrays.values())
    if total > policy.max_bytes:
        raise InputTooLarge(
            f"inputs total {total} bytes; this model accepts at most {policy.max_bytes} per request"
            " (split the batch)"
        )

    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        array = arrays[spec.name]
        try:
            actual = dtype_name(array)
        except TypeError:
            actual = str(array.dtype)
        if actual != spec.dtype:
            raise DtypeMismatch(
                f"input {spec.name!r} has dtype {actual}; the model takes {spec.dtype} "
                + (
                    "(pass str items: numpy.asarray(texts, dtype=object))"
                    if spec.dtype == "string"
                    else f"(cast with .astype({spec.dtype!r}))"
                )
            )
        if array.ndim != len(spec.shape):
            raise ShapeMismatch(
                f"input {spec.name!r} has rank {array.ndim} (shape {array.shape}); the model "
                f"takes rank {len(spec.shape)} {_shape_text(spec.shape)}"
            )
        for axis, (dim, size) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(dim, int):
                if size != dim:
                    raise ShapeMismatch(
                        f"input {spec.name!r} axis {axis} is {size}; the model takes "
                        f"{_shape_text(spec.shape)}"
                    )
            elif dim in bound and bound[dim][0] != size:
                seen, where = bound[dim]
                raise ShapeMismatch(
                    f"input {spec.name!r} axis {axis} ({dim!r}) is {size} but {where} set "
                    f"{dim!r} = {seen}; dimensions with one name must agree"
                )
            else:
                bound.setdefault(str(dim), (size, f"input {spec.name!r} axis {axis}"))
        if array.dtype.kind in "fc" and not policy.allow_nonfinite:
            finite = np.isfinite(array)
            if not finite.all():
                bad = int(array.size - np.count_nonzero(finite))
                first = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise NonFiniteInput(
                    f"input {spec.name!r} holds {bad} NaN/Inf value(s), first at index {first}; "
                    "this model accepts finite values only"
                )
    return arrays


def _shape_text(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _canonical_layout(spec: TensorSpec, array: Array) -> Array:
    """The array as onnxruntime must see it: native byte order (the hash normalizes byte order,
    onnxruntime reads raw bytes), bools as 0/1, strings as an object array of ``str``."""
    if array.dtype.kind == "b":
        return np.asarray(np.not_equal(array.view(np.uint8), 0))  # 0-d stays an array
    if array.dtype.kind in "OU" and spec.dtype == "string":
        items = array.astype(object)
        for item in items.flat:
            if not isinstance(item, str):
                raise DtypeMismatch(
                    f"input {spec.name!r} holds a {type(item).__name__}; string inputs take str"
                )
            try:
                item.encode()
            except UnicodeEncodeError:
                raise InvalidInput(
                    f"input {spec.name!r} holds a string that is not valid Unicode "
                    "(a lone surrogate); send UTF-8 text"
                ) from None
        return items
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _size(array: Array) -> int:
    if array.dtype.kind == "O":
        return sum(len(item.encode()) + 4 for item in array.flat)
    return int(array.nbytes)
