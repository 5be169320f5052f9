"""The program of an ezkl child process (see `_ezkl`).

Reads ``[[function, args], ...]`` as JSON from stdin, calls ``ezkl.<function>(*args)`` in turn
and writes one JSON line per call to stdout: ``{"ok": true}``, or ``{"ok": false, "error":
...}`` and stops. Anything ezkl prints goes to stderr. It imports no more than it needs: the
child's start-up is part of every proof's time.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ASYNC = frozenset({"create_evm_verifier"})
"""ezkl functions that need a running asyncio loop (they return a future)."""


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


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what ezkl prints goes to the parent's log file, not the reply channel
    import ezkl

    for function, args in json.load(sys.stdin):
        try:
            _call(ezkl, function, args)
        except Exception as exc:
            error = f"ezkl.{function}: {type(exc).__name__}: {exc}"
            replies.write(json.dumps({"ok": False, "error": error}) + "\n")
            replies.flush()
            return
        replies.write('{"ok": true}\n')
        replies.flush()


if __name__ == "__main__":
    main()
