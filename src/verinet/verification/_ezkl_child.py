"""The program of an ezkl worker process (see `_ezkl`).

It imports ezkl, then serves requests read from stdin, one JSON line each::

    {"bind": {"cwd": ..., "env": {...}} | null, "log": path, "calls": [[function, args], ...]}

The first request binds it: it moves into ``cwd`` and sets ``env`` (HOME, the XDG folders,
EZKL_REPO_PATH) before ezkl reads them; later requests carry no binding. For each call it runs
``ezkl.<function>(*args)`` and writes one JSON line to stdout, ``{"ok": true}`` or ``{"ok":
false, "error": ...}`` (and stops the request there), then ``{"done": true, "retire": ...}``.
A Rust panic in ezkl is reported like an error, and retires the worker: its state is suspect.
Anything ezkl prints during a request goes to the request's ``log`` file.

It exits when stdin closes, after `IDLE_EXIT_S` without a request (status `IDLE_STATUS`), or
after a request that took its peak memory past `RETIRE_RSS_KB` (it says ``"retire": true``
first): the memory of a large proof comes back to the system only when the process ends.
Arguments, both optional: the idle seconds and the retiring peak in KiB.

The peak is the worker's own: ``VmHWM`` in ``/proc/self/status``, which belongs to the address
space and so starts afresh at exec. Not ``ru_maxrss``: Linux carries that across fork and exec,
so under a parent that once held more than the mark every worker would retire after its first
request. Where there is no ``/proc`` (macOS), ``ru_maxrss`` counts only once it has grown past
its value at start, i.e. once it is surely the worker's own.
"""

from __future__ import annotations

import json
import os
import resource
import select
import sys
from typing import Any, Final

ASYNC = frozenset({"create_evm_verifier"})
"""ezkl functions that need a running asyncio loop (they return a future)."""
IDLE_EXIT_S: Final = 60.0
IDLE_STATUS: Final = 75
RETIRE_RSS_KB: Final = 1 << 20  # 1 GiB


def _own_peak_kb(inherited_kb: int) -> int:
    """This process's peak resident memory in KiB (0 when it cannot be told from the
    parent's); `inherited_kb` is ``ru_maxrss`` read at start."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:   18940 kB"
    except OSError:
        pass
    peak = _maxrss_kb()
    return peak if peak > inherited_kb else 0


def _maxrss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes there


def _run_args(ezkl: Any, fields: dict[str, Any]) -> Any:
    args = ezkl.PyRunArgs()
    for name, value in fields.items():
        setattr(args, name, [tuple(v) for v in value] if name == "variables" else value)
    return args


def _call(ezkl: Any, function: str, args: list[Any]) -> None:
    if function == "gen_settings":
        args[2] = _run_args(ezkl, args[2])
    if function not in ASYNC:
        getattr(ezkl, function)(*args)
        return
    import asyncio

    async def call() -> None:
        await getattr(ezkl, function)(*args)

    asyncio.run(call())


def _serve(ezkl: Any, request: dict[str, Any], reply: Any) -> bool:
    """Run a request's calls; whether the process is still fit to serve (not after a panic)."""
    bind = request.get("bind")
    if bind is not None:
        os.environ.update(bind["env"])
        os.chdir(bind["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        for function, args in request["calls"]:
            try:
                _call(ezkl, function, args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a Rust panic is a BaseException (PanicException)
                error = f"ezkl.{function}: {type(exc).__name__}: {exc}"
                reply(json.dumps({"ok": False, "error": error}))
                return isinstance(exc, Exception)
            reply('{"ok": true}')
        return True
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        os.close(quiet)


def main() -> None:
    idle_s = float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_EXIT_S
    retire_kb = int(sys.argv[2]) if len(sys.argv) > 2 else RETIRE_RSS_KB
    inherited_kb = _maxrss_kb()
    channel = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # ezkl prints only into a request's log, never on the reply channel
    os.close(quiet)

    def reply(line: str) -> None:
        channel.write(line + "\n")
        channel.flush()

    import ezkl

    pending = b""
    while True:
        while b"\n" not in pending:
            ready, _, _ = select.select([0], [], [], idle_s)
            if not ready:
                sys.exit(IDLE_STATUS)
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return  # the parent closed the pipe, or exited
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        fit = _serve(ezkl, json.loads(line), reply)
        retire = not fit or _own_peak_kb(inherited_kb) > retire_kb
        reply(json.dumps({"done": True, "retire": retire}))
        if retire:
            return


if __name__ == "__main__":
    main()
