"""Run a command, and end it when the process that started the keeper is gone (POSIX).

    python -m verinet._keeper PARENT_PID COMMAND [ARG ...]

For programs without such an option, anvil among them: a devnet or a test run killed outright
(SIGKILL, a crash) would otherwise leave its chain running, unowned. The keeper and the
command share a process group; SIGTERM and SIGINT sent to the keeper are passed on, and the
keeper exits, with the command's status (128 + N for signal N, as a shell reports it),
only after the command has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

POLL_S = 1.0
"""How often the keeper looks for its parent."""
STOP_S = 10.0
"""How long the command may take to exit after SIGTERM before it is killed."""


def main(argv: list[str]) -> int:
    """Run the command; its exit status (128 + N for a command ended by signal N)."""
    code = _run(argv)
    return 128 - code if code < 0 else code


def _run(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        # Passed on, and the keeper waits for the command: once the keeper has exited, so
        # has the command (its port is free).
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            return child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() == parent:
                continue
        child.terminate()  # the parent is gone
        try:
            return child.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
