"""ezkl calls run in a child process that writes only under a directory the caller names.

Why not call ezkl in-process for the steps that build circuits and proofs (ezkl 23.0.5):

- Setup and proving write range-check tables to a cache directory that ezkl fixes once per
  process (``$EZKL_REPO_PATH``, else ``~/.ezkl``); once fixed, it cannot be moved to the next
  model's directory.
- `create_evm_verifier` asks svm for a solc binary, which writes ``~/.svm`` and downloads.
- Calibration prints tables; library code must not write to the caller's console.
- Some calls need a running asyncio loop (`create_evm_verifier` returns a future).
- A proof of a larger circuit takes gigabytes, which come back when the child exits.

In the child, HOME, the XDG directories and EZKL_REPO_PATH point into the scratch directory,
ezkl's console output goes to a temporary file (logged at DEBUG on "verinet.zk"), and each call
that needs one runs inside an asyncio loop. A child costs about 30 ms on top of the calls.

The child's program is `_ezkl_child.py`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_log = logging.getLogger("verinet.zk")
_LOG_TAIL = 2000  # characters of ezkl's output quoted in a failure message
_CHILD = Path(__file__).with_name("_ezkl_child.py")


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
    calls: Sequence[Call], *, scratch: Path, on_done: Callable[[int], None] | None = None
) -> Failure | None:
    """Run `calls` in order in one child process; stop at the first that raises.

    `scratch` becomes the child's home and ezkl cache directory. `on_done(n)` is called after
    the n-th call succeeded. Returns None when every call succeeded.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(scratch),
        "XDG_DATA_HOME": str(scratch / "data"),
        "XDG_CACHE_HOME": str(scratch / "cache"),
        "XDG_CONFIG_HOME": str(scratch / "config"),
        "EZKL_REPO_PATH": str(scratch / "ezkl"),
    }
    request = json.dumps([[call.function, list(call.args)] for call in calls]).encode()
    done, failure = 0, None
    with (
        tempfile.TemporaryFile(dir=scratch) as output,
        subprocess.Popen(
            [sys.executable, "-P", str(_CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=output,
            env=env,
            cwd=scratch,
        ) as child,
    ):
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(request)
            child.stdin.close()
            for line in child.stdout:
                reply = json.loads(line)
                if not reply["ok"]:
                    failure = Failure(calls[done].step, reply["error"])
                    break
                done += 1
                if on_done is not None:
                    on_done(done)
            status = child.wait()
        except BaseException:
            child.kill()
            raise
        output.seek(0)
        said = output.read().decode(errors="replace")
    if said:
        _log.debug("ezkl said (%s):\n%s", ", ".join(call.step for call in calls), said)
    if failure is None and done < len(calls):
        failure = Failure(calls[done].step, f"the ezkl process exited with status {status}")
    if failure is not None and said:
        failure = Failure(failure.step, f"{failure.message}\nezkl's output:\n{said[-_LOG_TAIL:]}")
    return failure
