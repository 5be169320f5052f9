"""ezkl calls run in worker processes that write only under a directory the caller names.

Why not call ezkl in-process for the steps that build circuits and proofs (ezkl 23.0.5):

- Setup and proving write range-check tables to a cache directory that ezkl fixes once per
  process (``$EZKL_REPO_PATH``, else ``~/.ezkl``); once fixed, it cannot be moved to the next
  model's directory.
- `create_evm_verifier` asks svm for a solc binary, which writes ``~/.svm`` and downloads.
- Calibration prints tables; library code must not write to the caller's console.
- Some calls need a running asyncio loop (`create_evm_verifier` returns a future).
- A proof of a larger circuit takes gigabytes, which come back when the process exits.

A worker is bound to one scratch directory by its first request: HOME, the XDG directories and
EZKL_REPO_PATH point into it (ezkl reads them at its first use, not at import), and what ezkl
prints during a request goes to a file there (logged at DEBUG on "verinet.zk").

Why workers that live on: starting a process and importing ezkl costs 25-30 ms, a fifth of a
small circuit's setup or proof. A model's proofs reuse the worker its circuit was built with
(same directory), and one spare worker, started with ezkl imported but not yet bound, waits for
the next directory, so a call finds a warm worker unless it is the process's first. Workers end
by themselves: `IDLE_EXIT_S` after their last request, after a request that took them past
`RETIRE_RSS_KB` of memory, or when this process exits (their stdin closes). At most `KEEP`
bound workers wait; the least recently used goes first.

The worker's program is `_ezkl_child.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from verinet.verification._ezkl_child import IDLE_EXIT_S, IDLE_STATUS, RETIRE_RSS_KB

__all__ = ["IDLE_EXIT_S", "KEEP", "RETIRE_RSS_KB", "Call", "Failure", "close_workers", "run_calls"]

_log = logging.getLogger("verinet.zk")
_LOG_TAIL = 2000  # characters of ezkl's output quoted in a failure message
_CHILD = Path(__file__).with_name("_ezkl_child.py")
KEEP: Final = 4
"""Bound workers kept waiting for another request in their directory."""
_REUSE_WITHIN_S: Final = IDLE_EXIT_S - 15.0
"""A worker idle longer than this is not used again: it is about to exit by itself."""


@dataclass(frozen=True, slots=True)
class Call:
    """One ezkl function call. `args` are JSON values (paths as str); `gen_settings` takes its
    run arguments as a dict of `ezkl.PyRunArgs` attributes."""

    step: str
    function: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """The call that failed, and what ezkl said."""

    step: str
    message: str


def run_calls(
    calls: Sequence[Call],
    *,
    scratch: Path,
    on_done: Callable[[int], None] | None = None,
    more_to_come: bool = False,
) -> Failure | None:
    """Run `calls` in order in a worker bound to `scratch`; stop at the first that raises.

    `scratch` becomes the worker's home and ezkl cache directory. `on_done(n)` is called after
    the n-th call succeeded. `more_to_come`: the caller sends another request at once, so no
    spare worker is started yet (its start-up would take CPU from that request). Returns None
    when every call succeeded.
    """
    scratch = scratch.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    worker = _POOL.take(scratch)
    outcome = worker.run(calls, scratch, on_done)
    if outcome.exited_idle:  # it timed out just as this request came: no call ran
        _POOL.retire(worker)
        worker = _POOL.take(scratch, fresh=True)
        outcome = worker.run(calls, scratch, on_done)
    if outcome.reusable:
        _POOL.give(worker, spare=not more_to_come)
    else:
        _POOL.retire(worker)
    if outcome.said:
        _log.debug("ezkl said (%s):\n%s", ", ".join(call.step for call in calls), outcome.said)
    failure = outcome.failure
    if failure is not None and outcome.said:
        failure = Failure(
            failure.step, f"{failure.message}\nezkl's output:\n{outcome.said[-_LOG_TAIL:]}"
        )
    return failure


def close_workers() -> None:
    """End every waiting worker now (and wait for them): their memory comes back at once, and
    the next call starts a new worker."""
    _POOL.close()


@dataclass(frozen=True, slots=True)
class _Outcome:
    failure: Failure | None
    said: str
    reusable: bool
    exited_idle: bool = False


class _Worker:
    """One ezkl worker process, bound to `scratch` by its first request."""

    def __init__(self, idle_s: float = IDLE_EXIT_S, retire_kb: int = RETIRE_RSS_KB) -> None:
        # What it says outside a request's log (ezkl failing to import, a bad binding).
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the worker)
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(_CHILD), str(idle_s), str(retire_kb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.scratch: Path | None = None
        self.used = time.monotonic()

    def usable(self) -> bool:
        return self.process.poll() is None and time.monotonic() - self.used < _REUSE_WITHIN_S

    def close(self) -> None:
        """Close its pipes: the worker exits once its request in flight, if any, ends."""
        for pipe in (self.process.stdin, self.process.stdout, self._stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):  # a dead worker's stdin: BrokenPipeError
                    pipe.close()

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")[-_LOG_TAIL:]
        return ""

    def run(
        self, calls: Sequence[Call], scratch: Path, on_done: Callable[[int], None] | None
    ) -> _Outcome:
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        handle, log = tempfile.mkstemp(dir=scratch, prefix="ezkl-", suffix=".log")
        os.close(handle)
        request = {
            "bind": None if self.scratch is not None else _binding(scratch),
            "log": log,
            "calls": [[call.function, list(call.args)] for call in calls],
        }
        self.scratch = scratch
        done, failure, finished, retire = 0, None, False, False
        try:
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                for line in process.stdout:
                    reply = json.loads(line)
                    if "done" in reply:
                        finished, retire = True, bool(reply["retire"])
                        break
                    if not reply["ok"]:
                        failure = Failure(calls[done].step, reply["error"])
                        continue
                    done += 1
                    if on_done is not None:
                        on_done(done)
            except BrokenPipeError:
                pass  # it had exited: its status says why
            except BaseException:
                process.kill()
                process.wait()
                raise
            finally:
                self.used = time.monotonic()
            status = None if finished else process.wait()
            said = Path(log).read_text(errors="replace")
            if status is not None:
                said += self._stderr_tail()
        finally:
            Path(log).unlink(missing_ok=True)
        if status == IDLE_STATUS and done == 0 and failure is None:
            return _Outcome(None, said, reusable=False, exited_idle=True)
        if failure is None and done < len(calls):
            failure = Failure(calls[done].step, f"the ezkl process exited with status {status}")
        return _Outcome(failure, said, reusable=finished and not retire)


def _binding(scratch: Path) -> dict[str, Any]:
    return {
        "cwd": str(scratch),
        "env": {
            "HOME": str(scratch),
            "XDG_DATA_HOME": str(scratch / "data"),
            "XDG_CACHE_HOME": str(scratch / "cache"),
            "XDG_CONFIG_HOME": str(scratch / "config"),
            "EZKL_REPO_PATH": str(scratch / "ezkl"),
        },
    }


class _Pool:
    """Workers waiting for a request: bound ones by directory, and one spare."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._spare: _Worker | None = None
        self._closing: list[_Worker] = []  # closed, not yet reaped

    def take(self, scratch: Path, *, fresh: bool = False) -> _Worker:
        """A worker for `scratch`: its own waiting one, else the spare, else a new one
        (`fresh`: a new one)."""
        found: _Worker | None = None
        with self._lock:
            usable = {id(w): w.usable() for w in self._idle}  # once: it changes with time
            stale = [w for w in self._idle if not usable[id(w)]]
            self._idle = [w for w in self._idle if usable[id(w)]]
            mine = [w for w in self._idle if w.scratch == scratch]
            if mine and not fresh:
                found = mine[-1]
                self._idle.remove(found)
            elif self._spare is not None and self._spare.usable() and not fresh:
                found, self._spare = self._spare, None
        self._close(stale)
        return found if found is not None else _Worker()

    def give(self, worker: _Worker, *, spare: bool = True) -> None:
        """Put `worker` back to wait for its directory's next request; with `spare`, start a
        spare if none waits (after the request, off its path)."""
        start_spare = False
        with self._lock:
            self._idle.append(worker)
            excess, self._idle = self._idle[:-KEEP], self._idle[-KEEP:]
            if spare and (self._spare is None or not self._spare.usable()):
                if self._spare is not None:
                    excess.append(self._spare)
                self._spare = None
                start_spare = True
        self._close(excess)
        if start_spare:
            new = _Worker()
            with self._lock:
                taken = self._spare is None
                if taken:
                    self._spare = new
            if not taken:
                self._close([new])

    def retire(self, worker: _Worker) -> None:
        """`worker` serves no more requests."""
        self._close([worker])

    def _close(self, workers: Sequence[_Worker]) -> None:
        for worker in workers:
            worker.close()
        with self._lock:
            self._closing = [w for w in [*self._closing, *workers] if w.process.poll() is None]

    def close(self) -> None:
        """Close every worker and wait for them (at exit)."""
        with self._lock:
            workers = [*self._idle, *self._closing]
            workers += [self._spare] if self._spare is not None else []
            self._idle, self._spare, self._closing = [], None, []
        for worker in workers:
            worker.close()
        for worker in workers:
            try:
                worker.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()

    def forget(self) -> None:
        """In a forked child: the workers are the parent's."""
        self._lock = threading.Lock()
        self._idle, self._spare, self._closing = [], None, []


_POOL = _Pool()
atexit.register(_POOL.close)
os.register_at_fork(after_in_child=_POOL.forget)
