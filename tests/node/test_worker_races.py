"""The model pool under pressure: threads and event loops sharing workers that stall, die,
fail to start or outlive their loop, and the frames between node and worker.

Every test drives real forkserver workers. A worker is held mid-call with SIGSTOP (its
socket keeps what the node writes; it answers nothing), then let go (SIGCONT) or killed
(SIGKILL). Each wait is a poll with a deadline, so a hang fails the test instead of
stalling the run.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import shutil
import signal
import socket
import termios
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from verinet.errors import BlobNotFound, ExecutionFailed, ExecutionTimeout
from verinet.hub.publish import draft_manifest, store_model
from verinet.hub.store import DiskStore
from verinet.node import _channel
from verinet.node._workers import PIPELINE_BYTES, PIPELINE_DEPTH, _Worker
from verinet.node.worker import ModelPool
from verinet.runtime.executor import OnnxExecutor
from verinet.types import Cid

T = TypeVar("T")
WAIT = 10.0  # seconds any one thing may take before the test calls it a hang
REPEATS = 256  # the model's `t` output is its input tiled this many times


def _model() -> bytes:
    """``s = ReduceSum(x)`` (a 0-d output) and ``t = Tile(x, [REPEATS])`` (a large one)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, ["m"])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Tile", ["x", "r"], ["t"]),
        ],
        "sum_tile",
        [x],
        [s, t],
        [numpy_helper.from_array(np.array([REPEATS], np.int64), "r")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


MODEL = _model()
MANIFEST = draft_manifest(MODEL, name="sum-tile", fee=1, license="MIT")
INLINE = OnnxExecutor(MODEL, MANIFEST)


def _feeds(i: int, n: int = 8) -> dict[str, np.ndarray]:
    return {"x": np.arange(n, dtype=np.float32) + i}


def _same(got: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> bool:
    want = INLINE.run(feeds)
    return got.keys() == want.keys() and all(
        got[k].shape == want[k].shape and np.array_equal(got[k], want[k]) for k in want
    )


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


class Loop:
    """An event loop running in a thread of its own, as the node's HTTP loop does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self.submit(run()).result(WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


class InThread:
    """A blocking call made from a thread of its own (the chain loop, a dispute)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.outcome.append(fn())
        except BaseException as exc:
            self.outcome.append(exc)

    def result(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the call from a thread hangs"
        (outcome,) = self.outcome
        return outcome


@pytest.fixture()
def stored(tmp_path: Path) -> tuple[Path, Cid]:
    root = tmp_path / "blobs"
    return root, store_model(DiskStore(root), MODEL, MANIFEST)


@pytest.fixture()
def pool(stored: tuple[Path, Cid]) -> Iterator[ModelPool]:
    pool = ModelPool(stored[0], isolation="process", workers=1)
    pool.warm(stored[1])
    yield pool
    pool.close()


@pytest.fixture()
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def _only(pool: ModelPool) -> _Worker:
    (worker,) = pool._workers
    return worker


def _stop(worker: _Worker) -> int:
    os.kill(worker.process.pid, signal.SIGSTOP)
    return worker.process.pid


# -- frames ---------------------------------------------------------------------------------


ODD_ARRAYS = {
    "scalar": np.array(2.5, np.float32),
    "scalar_int": np.int64(-7) * np.ones((), np.int64),
    "empty": np.zeros((0, 3), np.float32),
    "empty_middle": np.zeros((2, 0, 4), np.int8),
    "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "strided": np.arange(40, dtype=np.int16).reshape(5, 8)[::2, 1::3],
    "bool": np.array([True, False, True]),
    "large": np.arange(300_000, dtype=np.float32),  # > 64 KiB, read in several chunks
}


def _roundtrip(frame: bytes) -> Any:
    size, kind = _channel._HEAD.unpack_from(frame)
    assert size == len(frame) - _channel._HEAD.size
    return _channel.result(kind, memoryview(frame)[_channel._HEAD.size :])


def test_tensors_keep_shape_dtype_and_values_through_a_frame() -> None:
    got = _roundtrip(_channel.answer(ODD_ARRAYS))
    for name, sent in ODD_ARRAYS.items():
        assert got[name].shape == sent.shape, name
        assert got[name].dtype == sent.dtype, name
        assert np.array_equal(got[name], sent), name
    frame = _channel.run_request("bafy-cid", ODD_ARRAYS)
    method, (cid, feeds) = _channel.parse_request(frame[4], memoryview(frame)[5:])
    assert (method, cid) == ("run", "bafy-cid")
    for name, sent in ODD_ARRAYS.items():
        assert feeds[name].shape == sent.shape and np.array_equal(feeds[name], sent), name


def test_object_tensors_travel_pickled() -> None:
    strings = {"s": np.array(["a", "bc"], dtype=object), "x": np.ones(2, np.float32)}
    frame = _channel.answer(strings)
    assert frame[4] == _channel.PICKLED
    got = _roundtrip(frame)
    assert list(got["s"]) == ["a", "bc"] and np.array_equal(got["x"], strings["x"])
    request = _channel.run_request("cid", strings)
    assert request[4] == _channel.PICKLED


def test_frames_are_read_whole_from_partial_writes_and_a_cut_frame_is_eof() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = _channel.FrameReader(ours.fileno())
        frame = _channel.answer({"x": ODD_ARRAYS["large"]})
        half = len(frame) // 2

        def write() -> None:
            for piece in (frame[:3], frame[3:half], frame[half:], frame[: half + 1]):
                theirs.sendall(piece)
            theirs.shutdown(socket.SHUT_WR)  # the worker dies mid-frame

        writer = threading.Thread(target=write)
        writer.start()
        got = reader.next(time.monotonic() + WAIT)
        assert got is not None
        assert np.array_equal(_channel.result(*got)["x"], ODD_ARRAYS["large"])
        with pytest.raises(EOFError):
            reader.next(time.monotonic() + WAIT)
        writer.join(WAIT)


def test_a_garbled_answer_is_a_channel_error() -> None:
    frame = _channel.answer({"x": np.arange(10, dtype=np.float32)})
    body = memoryview(frame)[_channel._HEAD.size : -4]  # a tensor's bytes cut short
    with pytest.raises(_channel.ChannelError):
        _channel.result(_channel.TENSORS, body)
    with pytest.raises(_channel.ChannelError):
        _channel.result(_channel.PICKLED, memoryview(b"\x80\x05garbage"))


def test_a_0d_output_keeps_its_shape_through_a_worker(
    pool: ModelPool, stored: tuple[Path, Cid]
) -> None:
    feeds = _feeds(1)
    got = pool.run_validated(stored[1], feeds)
    assert got["s"].shape == () and _same(got, feeds)
    got = asyncio.run(pool.arun_validated(stored[1], feeds))
    assert got["s"].shape == () and _same(got, feeds)


# -- pipelines ------------------------------------------------------------------------------


def test_large_answers_pipelined_with_a_large_request_all_arrive(
    pool: ModelPool, stored: tuple[Path, Cid]
) -> None:
    """64 calls whose answers (1 MiB each) overflow the socket while the loop is still
    writing requests, and a request too large to pipeline among them: no deadlock."""
    cid = stored[1]
    cases = [_feeds(i, 1024) for i in range(PIPELINE_DEPTH)]
    big = _feeds(99, PIPELINE_BYTES // 4 + 10)
    cases.insert(PIPELINE_DEPTH // 2, big)

    async def crowd() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(pool.arun_validated(cid, f) for f in cases))

    answers = asyncio.run(asyncio.wait_for(crowd(), WAIT))
    assert all(_same(got, feeds) for got, feeds in zip(answers, cases, strict=True))


def test_cancelled_calls_do_not_shift_the_answers_of_the_others(
    pool: ModelPool, stored: tuple[Path, Cid], loop: Loop
) -> None:
    cid, worker = stored[1], _only(pool)
    pid = _stop(worker)
    count = PIPELINE_DEPTH + 6  # the last 6 wait in the pool, not on the worker
    cases = [_feeds(i) for i in range(count)]
    futures = [loop.submit(pool.arun_validated(cid, f)) for f in cases]
    _until(lambda: len(worker.inflight) == PIPELINE_DEPTH, "the pipeline is full")
    _until(lambda: len(pool._pending) == 6, "the rest wait")
    cancelled = {0, 7, PIPELINE_DEPTH - 1, PIPELINE_DEPTH + 2}  # in flight and waiting
    for i in cancelled:
        futures[i].cancel()
    os.kill(pid, signal.SIGCONT)
    for i, future in enumerate(futures):
        if i not in cancelled:
            assert _same(future.result(WAIT), cases[i]), i
    assert _only(pool) is worker  # nobody lost the worker over it
    assert _same(pool.run_validated(cid, cases[0]), cases[0])


def test_calls_from_two_loops_on_one_worker_all_finish(
    pool: ModelPool, stored: tuple[Path, Cid], loop: Loop
) -> None:
    """A call from a second loop waits while the worker pipelines the first loop's calls;
    once they drain it must go on."""
    cid, worker = stored[1], _only(pool)
    pid = _stop(worker)
    first = loop.submit(pool.arun_validated(cid, _feeds(1)))
    _until(lambda: len(worker.inflight) == 1, "the first loop's call is on the worker")
    other = Loop()
    try:
        second = other.submit(pool.arun_validated(cid, _feeds(2)))
        _until(lambda: len(pool._pending) == 1, "the second loop's call waits")
        os.kill(pid, signal.SIGCONT)
        assert _same(first.result(WAIT), _feeds(1))
        assert _same(second.result(WAIT), _feeds(2))
    finally:
        other.close()


# -- threads, crashes and failed starts -------------------------------------------------------


@pytest.mark.parametrize("end", ["answers", "dies"])
def test_a_coroutine_s_call_waiting_for_a_thread_s_worker_runs_after_it(
    pool: ModelPool, stored: tuple[Path, Cid], loop: Loop, end: str
) -> None:
    """A thread holds the only worker; a coroutine's call waits for it. Whether the worker
    answers the thread or dies under it, the coroutine's call then runs (on a new worker
    after a death): a crash fails only the thread's call."""
    cid, worker = stored[1], _only(pool)
    pid = _stop(worker)
    held = InThread(lambda: pool.run_validated(cid, _feeds(1)))
    _until(lambda: worker.taken, "the thread holds the worker")
    waiting = loop.submit(pool.arun_validated(cid, _feeds(2)))
    _until(lambda: len(pool._pending) == 1, "the coroutine's call waits")
    os.kill(pid, signal.SIGCONT if end == "answers" else signal.SIGKILL)
    if end == "answers":
        assert _same(held.result(), _feeds(1))
    else:
        failure = held.result()
        assert isinstance(failure, ExecutionFailed) and "SIGKILL" in str(failure)
    assert _same(waiting.result(WAIT), _feeds(2))
    assert (_only(pool) is worker) == (end == "answers")


def test_a_worker_that_dies_mid_answer_fails_only_that_call(
    pool: ModelPool, stored: tuple[Path, Cid], loop: Loop
) -> None:
    """The loop is busy while the worker writes a 1 MiB answer; the worker dies with part
    of it in the socket. That call fails; the one behind it runs on a new worker."""
    cid, worker = stored[1], _only(pool)
    pid = _stop(worker)
    cases = [_feeds(1, 1024), _feeds(2)]
    futures = [loop.submit(pool.arun_validated(cid, f)) for f in cases]
    _until(lambda: len(worker.inflight) == 2, "both calls are on the worker")
    busy, free = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        busy.set()
        free.wait(WAIT)

    def unread() -> int:
        count = array.array("i", [0])
        fcntl.ioctl(worker.fd, termios.FIONREAD, count)
        return count[0]

    loop.loop.call_soon_threadsafe(hold_the_loop)
    try:
        assert busy.wait(WAIT)
        os.kill(pid, signal.SIGCONT)
        _until(lambda: unread() >= 128 * 1024, "the answer fills the socket")
        os.kill(pid, signal.SIGKILL)
        _until(lambda: not worker.process.is_alive(), "the worker is dead")
        assert unread() < 1024 * 1024  # the frame is cut short
    finally:
        free.set()
    with pytest.raises(ExecutionFailed, match="SIGKILL"):
        futures[0].result(WAIT)
    assert _same(futures[1].result(WAIT), cases[1])
    assert _only(pool) is not worker


def test_a_model_that_fails_to_load_does_not_stop_new_workers(
    pool: ModelPool, stored: tuple[Path, Cid]
) -> None:
    """Warming a model that cannot load fails that warm-up; the workers started later still
    load the models that do, instead of failing to start for ever."""
    cid = stored[1]
    missing = Cid(cid[:-4] + ("aaaa" if not cid.endswith("aaaa") else "bbbb"))
    with pytest.raises(BlobNotFound):
        pool.warm(missing)
    os.kill(_only(pool).process.pid, signal.SIGKILL)
    with pytest.raises(ExecutionFailed, match="died"):
        pool.run_validated(cid, _feeds(0))
    assert _same(pool.run_validated(cid, _feeds(1)), _feeds(1))


def test_a_failed_start_in_a_thread_fails_the_waiting_coroutines_too(
    pool: ModelPool, stored: tuple[Path, Cid], loop: Loop
) -> None:
    """With the model gone from the store no worker can start. A thread starts one; a
    coroutine's call waits for it. The call must fail, not wait forever."""
    root, cid = stored
    pid = _only(pool).process.pid
    shutil.rmtree(root)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExecutionFailed, match="died"):
        pool.run_validated(cid, _feeds(0))  # finds the worker dead: the pool is empty
    starter = InThread(lambda: pool.run_validated(cid, _feeds(1)))
    _until(lambda: pool._starting == 1 or bool(starter.outcome), "the thread starts one")
    waiting = loop.submit(pool.arun_validated(cid, _feeds(2)))
    assert isinstance(starter.result(), ExecutionFailed)
    with pytest.raises(ExecutionFailed, match="could not start"):
        waiting.result(WAIT)


def test_a_closed_loop_s_calls_in_flight_do_not_block_the_pool(
    pool: ModelPool, stored: tuple[Path, Cid]
) -> None:
    """`asyncio.run` ends (its tasks cancelled, the loop closed) while its calls are on the
    worker: nobody will read their answers, yet threads and other loops still get one."""
    cid, worker = stored[1], _only(pool)
    pid = _stop(worker)

    async def leave_calls_behind() -> None:
        for i in range(4):
            asyncio.get_running_loop().create_task(pool.arun_validated(cid, _feeds(i)))
        deadline = time.monotonic() + WAIT
        while len(worker.inflight) < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0)

    asyncio.run(leave_calls_behind())
    os.kill(pid, signal.SIGCONT)
    from_thread = InThread(lambda: pool.run_validated(cid, _feeds(5)))
    assert _same(from_thread.result(), _feeds(5))
    other = Loop()
    try:
        assert _same(other.submit(pool.arun_validated(cid, _feeds(6))).result(WAIT), _feeds(6))
    finally:
        other.close()


def test_a_stalled_worker_times_out_and_the_calls_behind_it_move_on(
    stored: tuple[Path, Cid], loop: Loop
) -> None:
    root, cid = stored
    pool = ModelPool(root, isolation="process", workers=1, timeout=0.1)
    try:
        pool.warm(cid)
        worker = _only(pool)
        _stop(worker)
        futures = [loop.submit(pool.arun_validated(cid, _feeds(i))) for i in range(3)]
        with pytest.raises(ExecutionTimeout):
            futures[0].result(WAIT)
        assert all(_same(f.result(WAIT), _feeds(i)) for i, f in enumerate(futures) if i)
        assert _only(pool) is not worker and not worker.process.is_alive()
    finally:
        pool.close()


def test_close_fails_calls_in_flight_and_waiting_threads_at_once(
    pool: ModelPool, stored: tuple[Path, Cid], loop: Loop
) -> None:
    cid, worker = stored[1], _only(pool)
    pid = _stop(worker)
    futures = [loop.submit(pool.arun_validated(cid, _feeds(i))) for i in range(5)]
    _until(lambda: len(worker.inflight) == 5, "the calls are on the worker")
    waiting = InThread(lambda: pool.run_validated(cid, _feeds(9)))
    _until(lambda: worker.claimed, "the thread waits for the worker")
    closing = InThread(pool.close)
    for future in futures:
        with pytest.raises(ExecutionFailed, match="shutting down"):
            future.result(WAIT)
    failure = waiting.result()
    assert isinstance(failure, ExecutionFailed) and "shutting down" in str(failure)
    os.kill(pid, signal.SIGCONT)  # let it see its socket close
    assert closing.result() is None
    assert not worker.process.is_alive()
    with pytest.raises(ExecutionFailed, match="shutting down"):
        loop.submit(pool.arun_validated(cid, _feeds(1))).result(WAIT)


def test_replacing_dead_workers_leaks_no_file_descriptors(
    pool: ModelPool, stored: tuple[Path, Cid]
) -> None:
    cid = stored[1]

    def cycle() -> None:
        os.kill(_only(pool).process.pid, signal.SIGKILL)
        with pytest.raises(ExecutionFailed, match="died"):
            pool.run_validated(cid, _feeds(0))
        assert _same(asyncio.run(pool.arun_validated(cid, _feeds(1))), _feeds(1))

    cycle()  # the first replacement may open what the pool keeps for good
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(4):
        cycle()
    assert len(os.listdir("/proc/self/fd")) <= before
