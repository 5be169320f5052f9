"""The ezkl worker processes: reused per directory, replaced when dead, retired when idle or
large, closed on demand. Real ezkl calls (`gen_srs` for a tiny circuit: milliseconds)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from verinet.verification import _ezkl
from verinet.verification._ezkl import Call, _Worker, close_workers, run_calls
from verinet.verification._ezkl_child import IDLE_STATUS


@pytest.fixture(autouse=True)
def no_workers() -> Iterator[None]:
    close_workers()
    yield
    close_workers()


def srs(path: Path) -> Call:
    return Call("srs", "gen_srs", (str(path), 2))


def waiting_pid(scratch: Path) -> int:
    """The pid of the worker waiting for `scratch`'s next request."""
    (worker,) = [w for w in _ezkl._POOL._idle if w.scratch == scratch.resolve()]
    return worker.process.pid


def test_a_directorys_calls_reuse_its_worker_and_a_spare_waits(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert run_calls([srs(tmp_path / "a.srs")], scratch=scratch) is None
    first = waiting_pid(scratch)
    assert first != os.getpid()
    spare = _ezkl._POOL._spare
    assert spare is not None and spare.scratch is None and spare.process.poll() is None

    assert run_calls([srs(tmp_path / "b.srs")], scratch=scratch) is None
    assert waiting_pid(scratch) == first
    assert (tmp_path / "a.srs").stat().st_size > 0 and (tmp_path / "b.srs").stat().st_size > 0

    other = tmp_path / "other"
    assert run_calls([srs(tmp_path / "c.srs")], scratch=other) is None
    assert waiting_pid(other) == spare.process.pid  # the spare was bound, not a cold start
    assert not any(p.name.endswith(".log") for p in scratch.iterdir())  # request logs removed


def test_a_failed_call_ends_its_request_and_the_worker_serves_on(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    done: list[int] = []
    failure = run_calls(
        [
            srs(tmp_path / "a.srs"),
            Call("compile", "compile_circuit", (str(tmp_path / "no.onnx"), "c", "s.json")),
            srs(tmp_path / "never.srs"),
        ],
        scratch=scratch,
        on_done=done.append,
    )
    assert failure is not None and failure.step == "compile"
    assert "ezkl.compile_circuit" in failure.message
    assert done == [1]
    assert not (tmp_path / "never.srs").exists()
    pid = waiting_pid(scratch)
    assert run_calls([srs(tmp_path / "b.srs")], scratch=scratch) is None
    assert waiting_pid(scratch) == pid


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert run_calls([srs(tmp_path / "a.srs")], scratch=scratch) is None
    (worker,) = _ezkl._POOL._idle
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    assert run_calls([srs(tmp_path / "b.srs")], scratch=scratch) is None
    assert waiting_pid(scratch) != worker.process.pid


def test_a_panic_in_ezkl_is_reported_and_retires_the_worker(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert run_calls([srs(tmp_path / "a.srs")], scratch=scratch) is None
    pid = waiting_pid(scratch)
    panics = Call("srs", "gen_srs", (str(tmp_path / "huge.srs"), 60))  # asserts k <= 28
    failure = run_calls([panics], scratch=scratch)
    assert failure is not None and "PanicException" in failure.message
    assert not [w for w in _ezkl._POOL._idle if w.scratch == scratch.resolve()]
    assert run_calls([srs(tmp_path / "b.srs")], scratch=scratch) is None
    assert waiting_pid(scratch) != pid


def test_a_worker_that_dies_mid_request_fails_the_call_it_was_on(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert run_calls([srs(tmp_path / "a.srs")], scratch=scratch) is None
    (worker,) = [w for w in _ezkl._POOL._idle if w.scratch == scratch.resolve()]

    def kill_after_first(n: int) -> None:
        worker.process.send_signal(signal.SIGKILL)

    # The second call writes into a FIFO nobody reads: it blocks until the worker is killed.
    fifo = tmp_path / "blocks.srs"
    os.mkfifo(fifo)
    calls = [srs(tmp_path / "b.srs"), Call("setup", "gen_srs", (str(fifo), 2))]
    failure = run_calls(calls, scratch=scratch, on_done=kill_after_first)
    assert failure is not None and failure.step == "setup"
    assert f"status {-signal.SIGKILL}" in failure.message
    assert run_calls([srs(tmp_path / "d.srs")], scratch=scratch) is None


def test_a_worker_gone_idle_reports_so_without_running_anything(tmp_path: Path) -> None:
    worker = _Worker(idle_s=0.05)
    assert worker.process.wait(timeout=30) == IDLE_STATUS
    outcome = worker.run([srs(tmp_path / "a.srs")], tmp_path, None)
    assert outcome.exited_idle and not outcome.reusable and outcome.failure is None
    assert not (tmp_path / "a.srs").exists()


def test_a_worker_past_its_memory_mark_retires_after_answering(tmp_path: Path) -> None:
    worker = _Worker(retire_kb=1)
    outcome = worker.run([srs(tmp_path / "a.srs")], tmp_path, None)
    assert outcome.failure is None and not outcome.reusable
    assert (tmp_path / "a.srs").exists()
    assert worker.process.wait(timeout=30) == 0


_BIG_PARENT = """
import sys
from pathlib import Path
from verinet.verification._ezkl import Call, _Worker
held = bytearray(1100 << 20)
for i in range(0, len(held), 4096):  # touch every page: resident, not just reserved
    held[i] = 1
worker = _Worker()
outcome = worker.run([Call("srs", "gen_srs", (sys.argv[1], 2))], Path(sys.argv[2]), None)
print("failure" if outcome.failure else "reusable" if outcome.reusable else "retired")
"""


def test_a_worker_under_a_parent_past_the_mark_counts_only_its_own_memory(
    tmp_path: Path,
) -> None:
    # Linux carries ru_maxrss across fork and exec: a worker reading it would take the
    # parent's 1.1 GiB for its own and retire after this tiny request.
    args = [str(tmp_path / "a.srs"), str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-c", _BIG_PARENT, *args], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["reusable"]


def test_a_worker_that_grows_past_its_mark_retires_and_one_below_it_does_not(
    tmp_path: Path,
) -> None:
    # A worker serving a tiny request peaks near 20 MiB; turning a 2 Mi-element buffer into
    # field elements takes it to about 80 MiB (the list, its JSON, ezkl's copy and answer).
    mark_kb = 40 << 10
    small = _Worker(retire_kb=mark_kb)
    outcome = small.run([Call("felts", "buffer_to_felts", ([7] * 16,))], tmp_path, None)
    assert outcome.failure is None and outcome.reusable
    small.close()
    large = _Worker(retire_kb=mark_kb)
    outcome = large.run([Call("felts", "buffer_to_felts", ([7] * (2 << 20),))], tmp_path, None)
    assert outcome.failure is None and not outcome.reusable
    assert large.process.wait(timeout=30) == 0


def test_close_workers_ends_them_all(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert run_calls([srs(tmp_path / "a.srs")], scratch=scratch) is None
    workers = [*_ezkl._POOL._idle, _ezkl._POOL._spare]
    close_workers()
    assert all(w is not None and w.process.poll() is not None for w in workers)
    assert _ezkl._POOL._idle == [] and _ezkl._POOL._spare is None


def test_what_a_worker_says_before_any_request_reaches_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that cannot start (ezkl missing from its interpreter, say) explains itself.
    broken = tmp_path / "broken_child.py"
    broken.write_text("import sys\nsys.exit('ModuleNotFoundError: No module named ezkl')\n")
    monkeypatch.setattr(_ezkl, "_CHILD", broken)
    failure = run_calls([srs(tmp_path / "a.srs")], scratch=tmp_path / "scratch")
    assert failure is not None and failure.step == "srs"
    assert "exited with status 1" in failure.message
    assert "No module named ezkl" in failure.message
