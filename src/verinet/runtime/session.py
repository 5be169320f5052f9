"""onnxruntime sessions pinned to a manifest's `ExecutionProfile`."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from verinet.errors import ConfigError, ExecutionFailed, ExecutionTimeout
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
    options.log_severity_level = 4  # fatal only: every failure surfaces as a typed exception
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


class _Watchdog:
    """One daemon thread that sets `RunOptions.terminate` on runs past their deadline.

    onnxruntime checks the flag between kernels (inside Loop bodies too), so a model that loops
    forever or runs too long ends with a typed error instead of a stuck job. One shared thread
    keeps the cost per run to a heap push (a `threading.Timer` per run costs ~50 us).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, ort.RunOptions] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")  # when the thread next wakes by itself

    def start(self) -> None:
        """Start the thread now (a process that caps its memory starts it first: a thread
        that cannot get its stack leaves ``Thread.start`` waiting forever)."""
        with self._cond:
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="verinet-watchdog", daemon=True)
            self._thread.start()

    def watch(self, options: ort.RunOptions, timeout: float) -> int:
        with self._cond:
            self._start()
            # Drop finished runs here, so the thread only wakes when the earliest deadline moves.
            while self._heap and self._heap[0][1] not in self._live:
                heapq.heappop(self._heap)
            ticket = next(self._ids)
            deadline = time.monotonic() + timeout
            self._live[ticket] = options
            heapq.heappush(self._heap, (deadline, ticket))
            # Wake the thread only if it would sleep past this deadline: waking it on every
            # run costs more than a small model's whole run.
            if deadline < self._wake_at:
                self._cond.notify()
            return ticket

    def release(self, ticket: int) -> None:
        with self._cond:
            self._live.pop(ticket, None)

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake_at = float("inf")
                    self._cond.wait()
                    continue
                deadline, ticket = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake_at = deadline
                    # Never past threading.TIMEOUT_MAX, which would kill this thread.
                    self._cond.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                heapq.heappop(self._heap)
                self._live.pop(ticket).terminate = True


_WATCHDOG = _Watchdog()
start_watchdog = _WATCHDOG.start


def run_session(
    session: ort.InferenceSession,
    names: Sequence[str],
    feeds: Mapping[str, Any],
    *,
    timeout: float | None,
    what: str = "the model",
) -> list[Any]:
    """`session.run` with a deadline; onnxruntime failures become `ExecutionFailed` and an
    overrun `ExecutionTimeout`."""
    options = ort.RunOptions()
    options.log_severity_level = 4
    ticket = _WATCHDOG.watch(options, timeout) if timeout is not None else None
    try:
        return list(session.run(list(names), dict(feeds), options))
    except ORT_ERRORS as exc:
        if options.terminate:
            raise ExecutionTimeout(
                f"{what} ran past its {timeout} s limit and was stopped"
            ) from None
        raise ExecutionFailed(f"{what} failed on this input: {first_line(exc)}") from None
    finally:
        if ticket is not None:
            _WATCHDOG.release(ticket)
