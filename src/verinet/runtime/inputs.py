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
    if not isinstance(inputs, Mapping):
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
        arrays[spec.name] = value
    total = sum(array.nbytes for array in arrays.values())
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
                f"(cast with .astype({spec.dtype!r}))"
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
