"""verinet._keeper: the command it runs (anvil, in a devnet) ends when the process that
started the keeper is killed outright, instead of running on unowned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.helpers import after_killing_parent

_COMMAND = "import sys; print('started', flush=True); sys.stdin.read()"
_PARENT = f"""
import os, subprocess, sys
keeper = [sys.executable, "-m", "verinet._keeper", str(os.getpid())]
subprocess.Popen([*keeper, sys.executable, "-c", {_COMMAND!r}])
sys.stdin.read()  # until killed
"""


def test_the_command_ends_when_the_keepers_parent_is_killed() -> None:
    # parent -> keeper -> command; the command blocks on stdin: only the keeper can end it.
    assert after_killing_parent(_PARENT, b"started\n") == b""


def test_the_keeper_passes_sigterm_on_and_exits_after_its_command() -> None:
    keeper = subprocess.Popen(
        [sys.executable, "-m", "verinet._keeper", str(os.getpid()), sys.executable, "-c", _COMMAND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert keeper.stdin is not None and keeper.stdout is not None
    try:
        assert keeper.stdout.readline() == b"started\n"
        keeper.terminate()
        assert keeper.wait(timeout=30) == 128 + signal.SIGTERM  # the command's end
        assert keeper.stdout.read() == b""  # the command is gone too
    finally:
        keeper.kill()
        keeper.stdin.close()
        keeper.stdout.close()
