"""A local anvil node (Foundry's dev chain) for tests and multi-process devnets.

The binary comes from the npm package `@foundry-rs/anvil`, which `./dev setup` installs
into the repository's `node_modules` with `npm ci`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from verinet.errors import ChainUnavailable, ConfigError

__all__ = ["AnvilProcess", "find_anvil"]

_PACKAGE = "@foundry-rs/anvil"
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _repo_roots() -> list[Path]:
    """Directories above this file and the working directory whose package.json pins anvil."""
    roots: list[Path] = []
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            manifest = folder / "package.json"
            try:
                pins_anvil = manifest.is_file() and _PACKAGE in manifest.read_text()
            except OSError:
                pins_anvil = False
            if pins_anvil and folder not in roots:
                roots.append(folder)
    return roots


def find_anvil() -> Path:
    """Path of the anvil binary: `$VERINET_ANVIL`, else the npm package's, else `anvil` on PATH.

    Raises `ConfigError` when there is none.
    """
    override = os.environ.get("VERINET_ANVIL")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"VERINET_ANVIL={override!r} is not an executable file")
        return path
    exe = ".exe" if sys.platform == "win32" else ""
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    for root in _repo_roots():
        modules = root / "node_modules"
        # The platform binary first: `.bin/anvil` is a node wrapper that costs a node start.
        for candidate in (
            modules / f"{_PACKAGE}-{sys.platform}-{arch}" / "bin" / f"anvil{exe}",
            modules / ".bin" / f"anvil{exe}",
        ):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    on_path = shutil.which("anvil")
    if on_path is not None:
        return Path(on_path)
    raise ConfigError(
        f"anvil not found: run `./dev setup` (it runs `npm ci` to install {_PACKAGE}), "
        "or set VERINET_ANVIL to the path of an anvil binary"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            return "result" in json.loads(response.read())
    except (OSError, ValueError):
        return False


class AnvilProcess:
    """A running anvil node listening only on 127.0.0.1; stop it with `stop()` or `with`.

    >>> with AnvilProcess.start() as anvil:
    ...     chain = JsonRpcChain(anvil.url, dev_accounts(3), dev=True)
    """

    __slots__ = ("_output", "_process", "port")

    def __init__(self, process: subprocess.Popen[bytes], output: IO[bytes], port: int) -> None:
        self._process = process
        self._output = output
        self.port = port

    @classmethod
    def start(
        cls,
        port: int | None = None,
        *,
        chain_id: int = 31337,
        block_time: float | None = None,
        hardfork: str = "prague",
    ) -> AnvilProcess:
        """Start anvil and return once it answers JSON-RPC.

        `port=None` picks a free port. `block_time=None` mines each transaction at once;
        a block time (seconds) holds up better under many concurrent senders. The hardfork
        defaults to prague, the EVM version Vyper 0.4 compiles for and the embedded chain
        runs (anvil 1.7.1's own default is a later fork). Raises `ChainUnavailable` with
        anvil's last output lines if it does not come up within 30 s.
        """
        binary = find_anvil()
        # A free port can be taken between our probe and anvil's bind: try a few.
        attempts = 3 if port is None else 1
        for attempt in range(attempts):
            chosen = _free_port() if port is None else port
            args = [
                str(binary),
                *("--host", "127.0.0.1", "--port", str(chosen)),
                *("--chain-id", str(chain_id), "--hardfork", hardfork),
                *("--gas-limit", "100000000", "--silent"),
            ]
            if block_time is not None:
                args += ["--block-time", str(block_time)]
            if sys.platform != "win32":  # ends anvil if this process dies without stopping it
                args = [sys.executable, "-m", "verinet._keeper", str(os.getpid()), *args]
            # Lives as long as the process (closed by stop()), so no `with` here.
            output = tempfile.TemporaryFile()  # noqa: SIM115
            try:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    # Its own process group, so stop() also reaches a node wrapper's child.
                    start_new_session=sys.platform != "win32",
                )
            except OSError as exc:
                output.close()
                raise ConfigError(f"cannot run anvil at {binary}: {exc}") from exc
            anvil = cls(process, output, chosen)
            try:
                anvil._wait_ready()
            except ChainUnavailable:
                anvil.stop()
                if attempt + 1 == attempts:
                    raise
                continue
            return anvil
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def url(self) -> str:
        """HTTP JSON-RPC endpoint."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ChainUnavailable(
                    f"anvil exited with code {self._process.returncode} on port {self.port}:\n"
                    + self._output_tail()
                )
            # Alive after answering: the answer came from this anvil, not a port squatter.
            if _answers(self.url) and self._process.poll() is None:
                return
            time.sleep(_POLL_S)
        raise ChainUnavailable(
            f"anvil did not answer on {self.url} within {_START_TIMEOUT_S:.0f} s:\n"
            + self._output_tail()
        )

    def _output_tail(self, lines: int = 20) -> str:
        self._output.seek(0)
        text = self._output.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def _signal(self, *, kill: bool) -> None:
        if sys.platform == "win32":
            self._process.kill() if kill else self._process.terminate()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL if kill else signal.SIGTERM)

    def stop(self) -> None:
        """Terminate anvil, and kill it if it has not exited within 10 s. Idempotent."""
        if self._process.poll() is None:
            self._signal(kill=False)
            try:
                self._process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(kill=True)
                self._process.wait(timeout=_STOP_TIMEOUT_S)
        self._output.close()

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"AnvilProcess(url={self.url!r}, pid={self.pid}, {state})"
