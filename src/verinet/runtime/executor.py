"""Running a model the way every honest node runs it.

`OnnxExecutor` takes a model file that `verinet.hub.safety` has checked (it checks it again if
given bytes), creates one onnxruntime session under the manifest's `ExecutionProfile`, validates
each request's tensors against the manifest, and returns outputs in the manifest's order. The
hashes that go on-chain are `group_hash` of the inputs and of the outputs in declared order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import onnx

from verinet.errors import ConfigError, UnsupportedSignature
from verinet.hub.files import file_cid
from verinet.hub.manifest import ExecutionProfile, InputPolicy, ModelManifest, TensorSpec
from verinet.hub.safety import DEFAULT_LIMITS, Limits, check_model, check_model_proto
from verinet.hub.signature import check_signature, graph_signature, untraceable_reason
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.session import open_session, run_session
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.trace import Trace, Tracer, execute_op
from verinet.types import Cid, Hash32

MAX_IR_VERSION = 13
"""Highest ONNX IR version onnxruntime 1.31 loads. onnx 1.23's helpers write IR 14 by default,
so a freshly built model must set ``model.ir_version`` (Verinet's samples write 10)."""


DEFAULT_TIMEOUT = 60.0
"""Seconds one run may take before it is stopped (`ExecutionTimeout`)."""
MAX_TIMEOUT = 86_400.0


class Executor(Protocol):
    """What the node needs from a model runner."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]: ...


class OnnxExecutor:
    """One checked model, one pinned onnxruntime session.

    Give the model as the file's bytes (checked by `check_model`, and against the manifest's CID
    when a manifest is given) or as an already-checked `onnx.ModelProto`. Without a manifest the
    signature is read from the graph and the default profile and input policy apply.
    """

    def __init__(
        self,
        model: bytes | onnx.ModelProto,
        manifest: ModelManifest | None = None,
        *,
        profile: ExecutionProfile | None = None,
        input_policy: InputPolicy | None = None,
        limits: Limits = DEFAULT_LIMITS,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(model, bytes):
            expected = manifest.model if manifest is not None else None
            self.model = check_model(model, expected_cid=expected, limits=limits)
            self.model_bytes = model
        else:
            check_model_proto(model, limits=limits)
            self.model = model
            self.model_bytes = model.SerializeToString()
        if self.model.ir_version > MAX_IR_VERSION:
            raise UnsupportedSignature(
                f"model IR version {self.model.ir_version} is newer than {MAX_IR_VERSION}; "
                f"save it with model.ir_version = {MAX_IR_VERSION}"
            )
        self.manifest = manifest
        if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
            raise ConfigError(
                f"timeout must be in (0, {MAX_TIMEOUT}] seconds or None, not {timeout}"
            )
        self.timeout = timeout
        if manifest is not None:
            check_signature(self.model, manifest)
            self._inputs, self._outputs = manifest.inputs, manifest.outputs
        else:
            self._inputs, self._outputs = graph_signature(self.model)
        self.profile = profile or (manifest.profile if manifest else ExecutionProfile())
        self.input_policy = input_policy or (manifest.input_policy if manifest else InputPolicy())
        self.model_cid: Cid = manifest.model if manifest else file_cid(self.model_bytes)
        self.session = open_session(self.model_bytes, self.profile)
        self._output_names = [spec.name for spec in self._outputs]
        self._tracer: Tracer | None = None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """The inputs in declared order, or an `InvalidInput` saying what to fix."""
        return validate_inputs(self._inputs, self.input_policy, inputs)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Validate and run; outputs keyed by name in the manifest's order."""
        feeds = self.validate(inputs)
        return self.run_validated(feeds)

    def run_validated(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        values = run_session(self.session, self._output_names, feeds, timeout=self.timeout)
        return dict(zip(self._output_names, values, strict=True))

    def input_hash(self, feeds: Mapping[str, Array]) -> Hash32:
        return group_hash([(spec.name, feeds[spec.name]) for spec in self._inputs])

    def output_hash(self, outputs: Mapping[str, Array]) -> Hash32:
        return group_hash([(name, outputs[name]) for name in self._output_names])

    def run_traced(self, inputs: Mapping[str, Any]) -> Trace:
        """Validate and run with every op's outputs exposed; the `Trace` commits to them.

        The traced session is created on first use (same profile, extra graph outputs).
        float16 models are refused (`UnsupportedSignature`): see `untraceable_reason`.
        """
        feeds = self.validate(inputs)
        if self._tracer is None:
            if self.profile.graph_optimization != "disable_all":
                raise UnsupportedSignature(
                    f"tracing needs graph_optimization 'disable_all', not "
                    f"{self.profile.graph_optimization!r}: other levels fuse ops in the plain run "
                    "but not in the traced one, so their outputs would differ"
                )
            reason = untraceable_reason(self.model)
            if reason:
                raise UnsupportedSignature(
                    f"this model cannot be traced: {reason}, and onnxruntime computes float16 "
                    "ops in float32 without rounding between them, so single ops would not "
                    "replay exactly"
                )
            self._tracer = Tracer(
                self.model,
                self.model_cid,
                [spec.name for spec in self._inputs],
                self._output_names,
                self.profile,
            )
        return self._tracer.run(feeds, timeout=self.timeout)

    def execute_op(self, index: int, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Re-execute op `index` alone under this model's profile (the one-step check)."""
        return execute_op(self.model, index, inputs, self.profile, timeout=self.timeout)
