"""Model manifests: what a model is, how it must be run, and how its answers are compared.

A manifest is a pydantic model serialised as canonical JSON (`canonical_json`) and stored as a
``json`` blob; its CID is what `ModelRegistry` records next to the model file's CID. Nodes run a
model only under the manifest's `ExecutionProfile`, so that honest nodes compute the same bits,
and compare answers under its `comparison` policy.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from verinet.errors import InvalidManifest
from verinet.hub import cid as cids
from verinet.hub.files import canonical_json
from verinet.protocol.types import Mode
from verinet.types import Cid

MANIFEST_SCHEMA: Final = "verinet.manifest/1"
MAX_MANIFEST_BYTES: Final = 64 * 1024

ELEMENT_TYPES: Final[dict[str, int]] = {
    "float32": 1,
    "uint8": 2,
    "int8": 3,
    "uint16": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "string": 8,
    "bool": 9,
    "float16": 10,
    "float64": 11,
    "uint32": 12,
    "uint64": 13,
}
"""Tensor element types a manifest may declare (numpy names) → ONNX TensorProto element type.
The canonical tensor encoding writes the code; other ONNX types are not carried."""
DTYPES: Final[frozenset[str]] = frozenset(ELEMENT_TYPES)
DTYPE_NAMES: Final[dict[int, str]] = {code: name for name, code in ELEMENT_TYPES.items()}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

Dim = int | str
"""A dimension: a fixed size (>= 0) or a symbol such as ``"batch"``; the same symbol must take
the same value across all inputs of one request."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Frozen):
    """One named input or output tensor."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    dtype: str  # one of DTYPES
    shape: tuple[Dim, ...] = Field(max_length=16)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"dtype {value!r} is not one of {sorted(DTYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
        for dim in shape:
            if isinstance(dim, int) and dim < 0:
                raise ValueError(f"dimension {dim} is negative")
            if isinstance(dim, str) and not _SYMBOL.fullmatch(dim):
                raise ValueError(f"symbolic dimension {dim!r} must be an identifier")
        return shape


OptimizationLevel = Literal["disable_all", "basic", "extended", "all"]


class ExecutionProfile(_Frozen):
    """How every node must run the model so that honest nodes agree bit for bit.

    Measured with onnxruntime 1.31 on x86-64: levels above ``disable_all`` rewrite the graph and
    can change output bits (MatMul+Add fuse into Gemm at ``basic``, which differs once a layer
    has more than 256 inputs; the sample CNN differs at ``all``, the attention block from
    ``extended``), and a traced run (every op's output exposed) blocks those rewrites. Under
    ``disable_all`` the ops that run are the ops in the file, so a trace step is exactly one op
    and traced outputs equal untraced ones. That is why it is the default and the only level
    optimistic mode takes. Thread counts must be pinned too: tree ensembles change with them.
    """

    provider: Literal["CPUExecutionProvider"] = "CPUExecutionProvider"
    intra_op_threads: int = Field(default=1, ge=1, le=256)
    inter_op_threads: int = Field(default=1, ge=1, le=256)
    execution_mode: Literal["sequential"] = "sequential"
    graph_optimization: OptimizationLevel = "disable_all"
    deterministic_compute: bool = True
    onnxruntime: str = ">=1.31,<1.32"
    """A PEP 440 specifier the runtime's onnxruntime version must satisfy."""

    @field_validator("onnxruntime")
    @classmethod
    def _specifier(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(f"{value!r} is not a version specifier like '>=1.31,<1.32'") from None
        return value

    def accepts(self, version: str) -> bool:
        return SpecifierSet(self.onnxruntime).contains(version, prereleases=True)


class Exact(_Frozen):
    """Outputs must be bit-identical (compare output hashes)."""

    kind: Literal["exact"] = "exact"


class Tolerance(_Frozen):
    """Outputs agree when ``|a - b| <= atol + rtol * |b|`` elementwise (numpy.isclose)."""

    kind: Literal["tolerance"] = "tolerance"
    atol: float = Field(ge=0.0, le=1.0)
    rtol: float = Field(ge=0.0, le=1.0)


class InputPolicy(_Frozen):
    """Limits on a request's tensors, checked before the model runs."""

    max_bytes: int = Field(default=16 << 20, ge=1, le=1 << 31)
    """Total bytes of all inputs of one request."""
    allow_nonfinite: bool = False
    """Whether float inputs may hold NaN or +-Inf."""


class ZkArtifacts(_Frozen):
    """ezkl artifacts for `zk` mode, each a file CID (`verinet.hub.files`), as
    `verinet.verification.zk_hub.store_artifacts` writes them.

    A client needs `settings`, `verification_key`, `srs` and `circuit` to commit to its inputs
    and check a proof; a prover needs `compiled_circuit` and `proving_key` too.
    """

    settings: Cid
    verification_key: Cid
    srs: Cid
    proving_key: Cid | None = None
    compiled_circuit: Cid | None = None
    circuit: Cid | None = None
    """The circuit's public tensors (names, shapes, fixed-point scales) and how its verifier
    was built: the ``artifacts.json`` of `verinet.verification.zk`."""
    verifier: Cid | None = None
    """The EVM verifier's init code (deployed as is, then named in ModelRegistry)."""
    srs_for_testing: bool = False
    """True when the SRS was generated locally (a devnet): its maker can forge proofs, so
    proofs against it prove nothing. A production SRS comes from a public ceremony."""

    @field_validator(
        "settings",
        "verification_key",
        "srs",
        "proving_key",
        "compiled_circuit",
        "circuit",
        "verifier",
    )
    @classmethod
    def _cid(cls, value: Cid | None) -> Cid | None:
        return None if value is None else _valid_cid(value)


ModeName = Literal["signed", "quorum", "optimistic", "zk"]
_MODE_BITS: Final[dict[str, Mode]] = {
    "signed": Mode.SIGNED,
    "quorum": Mode.QUORUM,
    "optimistic": Mode.OPTIMISTIC,
    "zk": Mode.ZK,
}


def _valid_cid(value: str) -> Cid:
    try:
        return cids.normalize(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


class ModelManifest(_Frozen):
    """Everything a node, a client and a verifier need to know about one published model."""

    schema_: Literal["verinet.manifest/1"] = Field(default=MANIFEST_SCHEMA, alias="schema")
    name: str
    version: str = Field(min_length=1, max_length=64)
    model: Cid
    """CID of the ONNX file (`verinet.hub.files.file_cid`)."""
    model_size: int = Field(ge=1)
    inputs: tuple[TensorSpec, ...] = Field(min_length=1, max_length=64)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1, max_length=64)
    profile: ExecutionProfile = ExecutionProfile()
    comparison: Annotated[Exact | Tolerance, Field(discriminator="kind")] = Exact()
    input_policy: InputPolicy = InputPolicy()
    fee: int = Field(ge=0, lt=1 << 256)
    """Fee per job in the token's smallest unit (what the registry is told at publish)."""
    license: str = Field(min_length=1, max_length=64)
    """An SPDX license identifier or expression, e.g. ``Apache-2.0``."""
    modes: tuple[ModeName, ...] = Field(min_length=1, max_length=4)
    zk: ZkArtifacts | None = None
    description: str = Field(default="", max_length=2048)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("name: letters, digits and . _ - / only, at most 128 characters")
        return value

    @field_validator("model")
    @classmethod
    def _model_cid(cls, value: str) -> Cid:
        return _valid_cid(value)

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes {self.modes} repeat a mode")
        names = [spec.name for spec in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError("input and output names must be distinct")
        if "optimistic" in self.modes and self.profile.graph_optimization != "disable_all":
            raise ValueError(
                "optimistic mode re-executes single ops, so the profile's graph_optimization "
                "must be 'disable_all'"
            )
        if "zk" in self.modes and self.zk is None:
            raise ValueError("zk mode needs zk artifacts (settings, verification_key, srs)")
        return self

    @property
    def mode_bits(self) -> Mode:
        """The modes as the bit set `ModelRegistry` stores."""
        bits = Mode(0)
        for name in self.modes:
            bits |= _MODE_BITS[name]
        return bits

    def canonical(self) -> bytes:
        """The manifest's one byte form (sorted keys, no whitespace), which its CID hashes."""
        return canonical_json(self.model_dump(mode="json", by_alias=True))

    def cid(self) -> Cid:
        return cids.cid_of(self.canonical(), "json")

    @classmethod
    def parse(cls, data: bytes) -> ModelManifest:
        """Validate a manifest received from a store or a peer."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise InvalidManifest(
                f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}"
            )
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidManifest(f"invalid model manifest: {exc}") from None
        # One manifest, one byte form, one CID: no "1" for 1, no true for 1, no base58 CIDs,
        # no duplicate keys, no spacing.
        if manifest.canonical() != data:
            raise InvalidManifest(
                "the manifest is not in canonical form (sorted keys, no whitespace, exact "
                "types, base32 CIDs); write it with ModelManifest.canonical()"
            )
        return manifest
