"""onnxruntime sessions pinned to a manifest's `ExecutionProfile`."""

from __future__ import annotations

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from verinet.errors import ConfigError, ExecutionFailed
from verinet.hub.manifest import ExecutionProfile

_LEVELS = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

ORT_VERSION: str = ort.__version__

ORT_ERRORS: tuple[type[Exception], ...] = (
    *(
        value
        for value in vars(_ort_state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
    RuntimeError,
)
"""What onnxruntime raises (its own classes derive from Exception directly)."""


def session_options(profile: ExecutionProfile) -> ort.SessionOptions:
    """Session options that pin everything the profile fixes; refuses a runtime it excludes."""
    if not profile.accepts(ORT_VERSION):
        raise ConfigError(
            f"this node runs onnxruntime {ORT_VERSION}; the model's profile requires "
            f"onnxruntime{profile.onnxruntime}: install a matching version to serve it"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[profile.graph_optimization]
    options.intra_op_num_threads = profile.intra_op_threads
    options.inter_op_num_threads = profile.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = profile.deterministic_compute
    options.log_severity_level = 3  # errors only; refusals surface as exceptions
    # Never read or write files on behalf of a model: no optimized-model dump, no profiling.
    options.enable_profiling = False
    options.optimized_model_filepath = ""
    return options


def providers(profile: ExecutionProfile) -> list[str]:
    """The execution providers, named explicitly (onnxruntime otherwise picks what it finds)."""
    return [profile.provider]


def open_session(model_bytes: bytes, profile: ExecutionProfile) -> ort.InferenceSession:
    """An onnxruntime session pinned to `profile`; `ExecutionFailed` if onnxruntime refuses."""
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=session_options(profile), providers=providers(profile)
        )
    except ORT_ERRORS as exc:
        raise ExecutionFailed(f"onnxruntime could not load the model: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
