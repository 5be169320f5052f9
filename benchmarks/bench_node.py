"""What a Verinet node's serving path costs: HTTP execution, and a job's end-to-end latency.

1. HTTP execution: ``POST /v1/models/{id}/execute`` on a node, against a plain FastAPI +
   onnxruntime server on the same model, measured in the same run. Each server is a process
   of its own, served by uvicorn with the settings of `verinet._server.serve` (one process,
   loopback):

       plain            what a user would write: one ``InferenceSession`` (the manifest's
                        thread and optimisation settings), an ``async def`` endpoint that
                        parses the same JSON body, decodes tensors with numpy, runs the
                        session inline and returns outputs as b64 JSON
       plain_to_thread  the same, with the run in ``asyncio.to_thread`` as the node does it
       node             `node_app(Node)` as configured by default (``isolation="process"``:
                        every run in a capped worker process, calls pipelined on its pipe)
       node_thread      ``isolation="thread"``: every run in the node's process (no
                        isolation; what the isolation costs is node / node_thread)

   Each node has an embedded chain of its own: deployed, the model published into the node's
   store, the node staked and registered for it, as a node needs before it serves a model.
   The load generator is this process, a raw-asyncio HTTP/1.1 client on keep-alive
   connections (cheap, so it takes little CPU from the servers). Per round, concurrency level
   and server (in a seeded random order, so drift cancels), it primes its connections, then
   times a fixed number of requests. Figures: requests/s (all timed requests over all timed
   wall time), p50/p99 latency, and two medians measured inside the server: ``app`` (the ASGI
   app: routing, body, handler, response) and ``call`` (the model call the handler makes:
   ``session.run`` for plain, `Node.execute_async` for a node). Ratios are node/plain throughput;
   the goals, for the isolated default at every concurrency level: node >= 0.85x plain on the
   mlp (a ~5 µs model, where the round trip to a worker weighs most) and >= 0.95x on an MLP
   whose raw run takes about 1 ms (``mlp_1ms``). The node's handler is also split into its steps,
   each timed warm in a tight loop (inside a busy server each costs several times more).

2. End to end: a `Devnet` on the embedded chain (4 nodes in this process), ``Client.infer``
   of the mlp in ``signed`` and ``quorum`` (k=3) mode, interleaved; median/p90 seconds and
   each job's phases (request, inputs, settle, fetch, verify). Goal: quorum <= 1.3x signed.

    python benchmarks/bench_node.py                  # table + JSON
    python benchmarks/bench_node.py --quick          # CI smoke run
    python benchmarks/bench_node.py --part http      # only the HTTP figures
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request

HTTP_GOALS = {"mlp": 0.85, "mlp_1ms": 0.95}
"""The isolated default's worst node/plain requests/s over the concurrency levels."""
E2E_GOAL = 1.3
GOAL_MODEL = "mlp"
MLP_1MS = (1536, 1536, 1536, 1536, 256)
"""A raw run of about 1 ms on the reference machine (as in bench_executor.py)."""
LEVELS = (1, 8, 32)
SERVERS = {
    "plain": "plain FastAPI + ort",
    "plain_to_thread": "plain, run in to_thread",
    "node": "node (default: worker processes)",
    "node_thread": "node, isolation=thread",
}
START_DEADLINE = 120.0
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_node.json"
TOKEN = 10**18
Samples = list[float]


# -- the servers (each runs in a process of its own: `--serve KIND`) ---------------------------


def bench_samples() -> list[Any]:
    """The devnet's sample models and ``mlp_1ms``, each with its manifest and an input."""
    from verinet.devnet.models import mlp
    from verinet.devnet.samples import SampleModel, sample_models
    from verinet.hub.publish import draft_manifest

    model = mlp(MLP_1MS).SerializeToString()
    x = np.random.default_rng(0).standard_normal((1, MLP_1MS[0])).astype(np.float32)
    manifest = draft_manifest(model, name="mlp_1ms", fee=1, license="Apache-2.0")
    one_ms = SampleModel("mlp_1ms", "an MLP of about 1 ms a run", model, manifest, {"x": x})
    return [*sample_models(), one_ms]


def plain_app(
    config: dict[str, Any], calls: Samples, *, offload: bool
) -> tuple[FastAPI, dict[str, int]]:
    """The FastAPI + onnxruntime server a user would write, and its model ids by name.
    `calls` collects each ``session.run``'s wall time."""
    levels = {
        "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    sessions: dict[int, ort.InferenceSession] = {}
    ids: dict[str, int] = {}
    for i, (name, spec) in enumerate(config.items(), start=1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["intra_op_threads"]
        options.inter_op_num_threads = spec["inter_op_threads"]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = levels[spec["graph_optimization"]]
        sessions[i] = ort.InferenceSession(
            spec["path"], sess_options=options, providers=["CPUExecutionProvider"]
        )
        ids[name] = i

    def decode(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
        dtype = np.dtype(tensor["dtype"]).newbyteorder("<")
        if "b64" in tensor:
            flat = np.frombuffer(base64.b64decode(tensor["b64"]), dtype=dtype)
        else:
            flat = np.asarray(tensor["data"], dtype=dtype)
        return flat.reshape(tensor["shape"])

    def encode(array: np.ndarray[Any, Any]) -> dict[str, Any]:
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        b64 = base64.b64encode(raw).decode()
        return {"dtype": str(array.dtype), "shape": list(array.shape), "b64": b64}

    def run(session: ort.InferenceSession, feeds: dict[str, Any]) -> list[Any]:
        start = time.perf_counter()
        values: list[Any] = session.run(None, feeds)
        calls.append(time.perf_counter() - start)
        return values

    app = FastAPI()

    @app.post("/v1/models/{model_id}/execute")
    async def execute(model_id: int, request: Request) -> dict[str, Any]:
        session = sessions.get(model_id)
        if session is None:
            raise HTTPException(404, f"no model {model_id}")
        body = json.loads(await request.body())
        feeds = {name: decode(tensor) for name, tensor in body["inputs"].items()}
        if offload:
            values = await asyncio.to_thread(run, session, feeds)
        else:
            values = run(session, feeds)
        names = [out.name for out in session.get_outputs()]
        return {"outputs": {n: encode(v) for n, v in zip(names, values, strict=True)}}

    return app, ids


def build_node(
    data_dir: Path, isolation: str, models: dict[str, Any]
) -> tuple[Any, dict[str, int]]:
    """A `Node` on an embedded chain of its own, staked and registered for `models` (name ->
    (file bytes, manifest), published into the node's own store), models loaded; and their
    ids by name."""
    from verinet.chain import EmbeddedChain
    from verinet.chain.deploy import deploy_protocol
    from verinet.devnet.bootstrap import fund, stake_node
    from verinet.hub.publish import publish
    from verinet.hub.store import DiskStore
    from verinet.node.config import NodeSettings
    from verinet.node.service import Node
    from verinet.types import Address, Wei

    chain = EmbeddedChain(accounts=3)
    deployer, owner, operator = chain.accounts[:3]
    deployment = deploy_protocol(chain, deployer=Address(deployer.address))
    store = DiskStore(data_dir / "blobs")
    ids = {
        name: publish(
            model, manifest, store=store, registry=deployment.models, sender=Address(owner.address)
        ).model_id
        for name, (model, manifest) in models.items()
    }
    stake = Wei(1_000 * TOKEN)
    fund(deployment, Address(deployer.address), [operator], Wei(2 * stake))
    # The endpoint becomes the server's URL once it is up (`serve_main`).
    stake_node(
        deployment, operator, endpoint="http://127.0.0.1", stake=stake, models=list(ids.values())
    )
    node = Node(NodeSettings(data_dir=data_dir, isolation=isolation), operator, deployment)
    node.sync_models()
    return node, {name: int(i) for name, i in ids.items()}


class _Timed:
    """ASGI wrapper, the same for every server: each request's wall time in the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: Samples = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.samples.append(time.perf_counter() - start)


def serve_main(kind: str, data_dir: Path) -> int:
    """Serve until stdin closes: the URL and model ids go to stdout as a JSON line, and each
    ``stats`` line read answers with the in-server medians since the last one."""
    from verinet._server import serve
    from verinet.node.daemon import configure_logging

    configure_logging(level="warning")
    config = json.loads((data_dir.parent / "models.json").read_text())
    calls: Samples = []
    node = None
    if kind.startswith("plain"):
        app, ids = plain_app(config, calls, offload=kind == "plain_to_thread")
    else:
        from verinet.hub.manifest import ModelManifest
        from verinet.node.api import node_app

        models = {
            name: (Path(spec["path"]).read_bytes(), ModelManifest.parse(spec["manifest"].encode()))
            for name, spec in config.items()
        }
        isolation = "thread" if kind == "node_thread" else "process"
        node, ids = build_node(data_dir, isolation, models)
        execute = node.execute_async

        async def timed_execute(*args: Any) -> Any:  # the handler looks it up on each request
            start = time.perf_counter()
            try:
                return await execute(*args)
            finally:
                calls.append(time.perf_counter() - start)

        node.execute_async = timed_execute  # type: ignore[method-assign]
        app = node_app(node)
    timed = _Timed(app)
    try:
        with serve(timed) as url:
            if node is not None:
                node.deployment.nodes.set_endpoint(url, sender=node.address)
            print(json.dumps({"url": url, "models": ids}), flush=True)
            for _ in sys.stdin:  # "stats"
                medians = {
                    "app_us": round(float(np.median(timed.samples or [0])) * 1e6, 1),
                    "call_us": round(float(np.median(calls or [0])) * 1e6, 1),
                }
                timed.samples.clear()
                calls.clear()
                print(json.dumps(medians), flush=True)
    finally:
        if node is not None:
            node.close()
    return 0


class Server:
    """A server process (`serve_main`); `stop` closes its stdin, then terminates, then kills."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind = kind
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, __file__, "--serve", kind, "--data-dir", str(data_dir)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.url = ""
        self.models: dict[str, int] = {}

    def _answer(self, deadline: float) -> dict[str, Any]:
        """The next JSON line the server prints."""
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([stdout], [], [], max(0.0, left))
            line = stdout.readline() if readable else ""
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer
            if self.process.poll() is not None or left <= 0:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server {self.kind} did not answer; its log ends:\n{tail}")

    def wait_ready(self, deadline: float) -> None:
        ready = self._answer(deadline)
        self.url, self.models = ready["url"], ready["models"]

    def stats(self) -> dict[str, float]:
        """In-server medians since the last call (µs): ASGI app, model call."""
        assert self.process.stdin is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return self._answer(time.monotonic() + 10)

    def close_stdin(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def stop(self) -> None:
        self.close_stdin()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_servers(
    root: Path, samples: dict[str, Any], keys: Sequence[str] = tuple(SERVERS)
) -> Iterator[dict[str, Server]]:
    """The servers `keys` of `SERVERS`, started in parallel, each in ``root/<key>``; the
    models' files, manifests and session settings in ``root/models.json``."""
    root.mkdir(parents=True, exist_ok=True)
    config = {}
    for name, sample in samples.items():
        path = root / f"{name}.onnx"
        path.write_bytes(sample.model_bytes)
        profile = sample.manifest.profile
        config[name] = {
            "path": str(path),
            "manifest": sample.manifest.canonical().decode(),
            "intra_op_threads": profile.intra_op_threads,
            "inter_op_threads": profile.inter_op_threads,
            "graph_optimization": profile.graph_optimization,
        }
    (root / "models.json").write_text(json.dumps(config))
    servers: dict[str, Server] = {}
    try:
        for key in keys:
            servers[key] = Server(key, root / key)
        deadline = time.monotonic() + START_DEADLINE
        for server in servers.values():
            server.wait_ready(deadline)
        yield servers
    finally:
        for server in servers.values():
            server.close_stdin()
        for server in servers.values():
            server.stop()


# -- the load generator ------------------------------------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> None:
    writer.write(request)
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"server answered {status.decode().strip()}: {body[:300]!r}")


async def _load(
    url: str,
    path: str,
    body: bytes,
    concurrency: int,
    warmup: int,
    count: int,
    *,
    primed: Callable[[], object],
) -> tuple[float, Samples]:
    """Wall time of `count` requests over `concurrency` keep-alive connections, and each one's
    latency; `warmup` requests go first, then `primed()` is called."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    latencies: Samples = []
    clock = time.perf_counter

    async def drive(
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], left: list[int]
    ) -> None:
        while left[0] > 0:
            left[0] -= 1
            start = clock()
            await _exchange(*conn, request)
            latencies.append(clock() - start)

    try:
        warm = [warmup]
        await asyncio.gather(*(drive(c, warm) for c in connections))
        primed()
        latencies.clear()
        left = [count]
        start = clock()
        await asyncio.gather(*(drive(c, left) for c in connections))
        elapsed = clock() - start
    finally:
        for _, writer in connections:
            writer.close()
        for _, writer in connections:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return elapsed, latencies


def check_outputs(servers: dict[str, Server], name: str, body: bytes, sample: Any) -> None:
    """Every server answers the example with the outputs onnxruntime gives, bit for bit."""
    import httpx

    from verinet.runtime.session import open_session
    from verinet.runtime.wire import group_from_json

    session = open_session(sample.model_bytes, sample.manifest.profile)
    values = session.run(None, dict(sample.example))
    expected = {out.name: v for out, v in zip(session.get_outputs(), values, strict=True)}
    for key, server in servers.items():
        path = f"/v1/models/{server.models[name]}/execute"
        answer = httpx.post(server.url + path, content=body, timeout=30).raise_for_status().json()
        outputs = group_from_json(answer["outputs"], max_bytes=1 << 30, what="outputs")
        if any(not np.array_equal(outputs[o], want) for o, want in expected.items()):
            raise RuntimeError(f"{key} answered {name} with other outputs than onnxruntime")


def measure_http(
    servers: dict[str, Server],
    samples: dict[str, Any],
    levels: Sequence[int],
    rounds: int,
    count: int,
    warmup: int,
) -> dict[str, Any]:
    from verinet.runtime.wire import group_to_json

    order = np.random.default_rng(0)
    keys = list(servers)
    results: dict[str, Any] = {}
    for name, sample in samples.items():
        body = json.dumps({"inputs": group_to_json(sample.example)}).encode()
        check_outputs(servers, name, body, sample)
        cells = [(k, c) for k in keys for c in levels]
        wall = dict.fromkeys(cells, 0.0)
        lat: dict[tuple[str, int], Samples] = {cell: [] for cell in cells}
        inside: dict[tuple[str, int], list[dict[str, float]]] = {cell: [] for cell in cells}
        for _ in range(rounds):
            for c in levels:
                for key in (keys[i] for i in order.permutation(len(keys))):
                    server = servers[key]
                    path = f"/v1/models/{server.models[name]}/execute"
                    elapsed, latencies = asyncio.run(
                        _load(
                            server.url,
                            path,
                            body,
                            c,
                            max(warmup, 2 * c),
                            count,
                            primed=server.stats,
                        )
                    )
                    wall[key, c] += elapsed
                    lat[key, c].extend(latencies)
                    inside[key, c].append(server.stats())
        figures = {
            key: {
                str(c): {
                    "requests": len(lat[key, c]),
                    "rps": round(len(lat[key, c]) / wall[key, c], 1),
                    "p50_ms": round(float(np.percentile(lat[key, c], 50)) * 1e3, 3),
                    "p99_ms": round(float(np.percentile(lat[key, c], 99)) * 1e3, 3),
                    **{
                        f"server_{part}": round(
                            float(np.median([s[part] for s in inside[key, c]])), 1
                        )
                        for part in ("app_us", "call_us")
                    },
                }
                for c in levels
            }
            for key in keys
        }
        plain = figures["plain"]
        results[name] = {
            "body_bytes": len(body),
            "servers": figures,
            "ratios": {
                f"{key}/plain": {
                    str(c): round(figures[key][str(c)]["rps"] / plain[str(c)]["rps"], 3)
                    for c in levels
                }
                for key in keys[1:]
            },
        }
    return results


# -- the node's handler, step by step ----------------------------------------------------------


def _median_us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(max(5, reps // 10)):
        fn()
    times = []
    clock = time.perf_counter
    for _ in range(reps):
        start = clock()
        fn()
        times.append(clock() - start)
    return round(float(np.median(times)) * 1e6, 1)


def _worker_us(pool: Any, cid: str, feeds: Any, reps: int, *, lone: bool) -> float:
    """Median µs of one `ModelPool.adirect` on an event loop, one call at a time (`lone`: as
    a node calls it for a lone client, the worker kept awake)."""

    async def calls() -> Samples:
        times = []
        for _ in range(reps + 10):
            start = time.perf_counter()
            await pool.adirect(cid, feeds, lone=lone)
            times.append(time.perf_counter() - start)
        return times[10:]

    return round(float(np.median(asyncio.run(calls()))) * 1e6, 1)


def _to_thread_us(reps: int) -> float:
    async def hops() -> Samples:
        times = []
        for _ in range(reps + 10):
            start = time.perf_counter()
            await asyncio.to_thread(lambda: None)
            times.append(time.perf_counter() - start)
        return times[10:]

    return round(float(np.median(asyncio.run(hops()))) * 1e6, 1)


def node_breakdown(data_dir: Path, sample: Any, reps: int) -> dict[str, Any]:
    """Median µs, warm in a tight loop, of each step of ``POST /execute`` on a node
    (`node_router.execute`, then `Node.execute`) and on the plain server. The HTTP layer
    (uvicorn, routing, JSON response) is common to both and left out."""
    from verinet.node.worker import ModelPool
    from verinet.runtime.inputs import validate_inputs
    from verinet.runtime.session import open_session
    from verinet.runtime.tensors import group_hash
    from verinet.runtime.wire import group_from_json, group_to_json
    from verinet.types import ModelId

    node, ids = build_node(data_dir, "thread", {sample.name: (sample.model_bytes, sample.manifest)})
    model_id = ModelId(ids[sample.name])
    served = node.served(model_id)
    manifest, cid = served.manifest, served.manifest_cid
    process_pool = ModelPool(data_dir / "blobs", isolation="process")
    try:
        process_pool.warm(cid)
        session = open_session(sample.model_bytes, manifest.profile)
        body = json.dumps({"inputs": group_to_json(sample.example)}).encode()
        limit = node.settings.max_request_bytes
        parsed = json.loads(body)
        inputs = group_from_json(parsed["inputs"], max_bytes=limit)
        feeds = validate_inputs(manifest.inputs, manifest.input_policy, inputs)
        outputs = node.pool.run_validated(cid, feeds)
        result = node.execute(model_id, inputs)
        raw = session.run(None, dict(feeds))

        def plain_decode() -> object:
            return {
                name: np.frombuffer(base64.b64decode(t["b64"]), np.dtype(t["dtype"])).reshape(
                    t["shape"]
                )
                for name, t in parsed["inputs"].items()
            }

        def plain_encode() -> object:
            return [base64.b64encode(np.ascontiguousarray(a).tobytes()).decode() for a in raw]

        def node_response() -> object:
            return {
                "input_hash": "0x" + result["input_hash"].hex(),
                "output_hash": "0x" + result["output_hash"].hex(),
                "outputs": group_to_json(result["outputs"]),
            }

        def metrics() -> None:
            node.metrics.executions.labels(path="direct", result="ok").inc()
            node.metrics.execution_seconds.observe(0.001)

        plain_steps: dict[str, Callable[[], object]] = {
            "json.loads(body)": lambda: json.loads(body),
            "numpy decode (b64)": plain_decode,
            "session.run": lambda: session.run(None, dict(feeds)),
            "encode outputs (b64)": plain_encode,
        }
        node_steps: dict[str, Callable[[], object]] = {
            "json.loads(body)": lambda: json.loads(body),
            "wire decode (group_from_json)": lambda: group_from_json(
                parsed["inputs"], max_bytes=limit
            ),
            "validate_inputs": lambda: validate_inputs(
                manifest.inputs, manifest.input_policy, inputs
            ),
            "input hash (group_hash)": lambda: group_hash(feeds),
            "pool.run, thread (run_session)": lambda: node.pool.run_validated(cid, feeds),
            "output hash (group_hash)": lambda: group_hash(
                [(s.name, outputs[s.name]) for s in manifest.outputs]
            ),
            "metrics (counter + histogram)": metrics,
            "response (hashes, group_to_json)": node_response,
        }
        plain_us = {k: _median_us(fn, reps) for k, fn in plain_steps.items()}
        node_us = {k: _median_us(fn, reps) for k, fn in node_steps.items()}
        for lone in (False, True):
            node_us[f"pool.adirect, process{', lone' if lone else ''} (+ validate, hashes)"] = (
                _worker_us(process_pool, cid, inputs, reps, lone=lone)
            )
        node_us["asyncio.to_thread hop (no-op)"] = _to_thread_us(reps)
        whole = _median_us(lambda: node.execute(model_id, inputs), reps)
    finally:
        process_pool.close()
        node.close()
    runs = [k for k in node_us if k.startswith("pool.")]
    hop = node_us["asyncio.to_thread hop (no-op)"]
    shared = sum(us for k, us in node_us.items() if k not in runs) - hop
    in_worker = sum(
        node_us[k] for k in node_us if k.startswith(("validate", "input h", "output h"))
    )
    totals = {  # the process path waits on its socket, no hop; it validates and hashes there
        "plain": round(sum(plain_us.values()), 1),
        "node": round(shared - in_worker + node_us[runs[1]], 1),
        "node, lone": round(shared - in_worker + node_us[runs[2]], 1),
        "node_thread": round(shared + hop + node_us[runs[0]], 1),
    }
    return {
        "plain_us": plain_us,
        "node_us": node_us,
        "node_execute_thread_us": whole,
        "handler_total_us": totals,
    }


# -- end to end on a devnet --------------------------------------------------------------------

PHASES = (
    ("requesting", "request"),
    ("sending the input", "inputs"),
    ("waiting", "settle"),
    ("fetching", "fetch"),
    ("verifying", "verify"),
)


def _phases(marks: list[tuple[float, str]], start: float, end: float) -> dict[str, float]:
    """Seconds per phase of one `Client.infer`, from the times of its progress messages."""
    firsts = sorted(
        (at, phase)
        for prefix, phase in PHASES
        if (at := next((t for t, msg in marks if msg.startswith(prefix)), None)) is not None
    )
    bounds = [start, *(t for t, _ in firsts[1:]), end]
    return {phase: bounds[i + 1] - bounds[i] for i, (_, phase) in enumerate(firsts)}


def measure_e2e(data_dir: Path, runs: int, warmup: int, isolation: str) -> dict[str, Any]:
    from verinet.client.sdk import Client
    from verinet.devnet.network import Devnet
    from verinet.devnet.samples import sample_models
    from verinet.node.daemon import configure_logging

    configure_logging(level="warning")  # the nodes run in this process
    example = next(s for s in sample_models() if s.name == GOAL_MODEL).example
    modes: dict[str, dict[str, Any]] = {
        "signed": {"mode": "signed"},
        "quorum(3)": {"mode": "quorum", "k": 3},
    }
    times: dict[str, Samples] = {m: [] for m in modes}
    phases: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    started = time.perf_counter()
    with Devnet.start(data_dir, chain="embedded", nodes=4, isolation=isolation) as net:
        startup = time.perf_counter() - started
        model = net.models[GOAL_MODEL]
        with Client(net.deployment, net.clients[0]) as client:
            for _ in range(warmup):
                for kwargs in modes.values():
                    client.infer(model, example, **kwargs)
            order = np.random.default_rng(0)
            names = list(modes)
            for _ in range(runs):
                for mode in (names[i] for i in order.permutation(len(names))):
                    marks: list[tuple[float, str]] = []
                    start = time.perf_counter()
                    result = client.infer(
                        model,
                        example,
                        progress=lambda msg, m=marks: m.append((time.perf_counter(), msg)),
                        **modes[mode],
                    )
                    end = time.perf_counter()
                    if result.verdict is None:
                        raise RuntimeError(f"{mode} job {result.job_id} came back unverified")
                    times[mode].append(end - start)
                    phases[mode].append(_phases(marks, start, end))
    figures = {
        mode: {
            "runs": len(ts),
            "median_s": round(float(np.median(ts)), 3),
            "p90_s": round(float(np.percentile(ts, 90)), 3),
            "phases_median_s": {
                phase: round(float(np.median([p.get(phase, 0.0) for p in phases[mode]])), 3)
                for _, phase in PHASES
            },
        }
        for mode, ts in times.items()
    }
    ratio = figures["quorum(3)"]["median_s"] / figures["signed"]["median_s"]
    return {
        "devnet_start_s": round(startup, 1),
        "nodes": 4,
        "isolation": isolation,
        "modes": figures,
        "quorum/signed": round(ratio, 3),
    }


# -- the run -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import fastapi
    import uvicorn

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:

    names = [GOAL_MODEL] if args.quick else args.models
    samples = {s.name: s for s in bench_samples() if s.name in names}
    isolation = "process"  # the default
    results: dict[str, Any] = {
        "machine": machine(),
        "params": {
            "models": names,
            "concurrency": list(args.levels),
            "rounds": args.rounds,
            "timed_requests_per_round": args.requests,
            "warmup_requests": args.warmup,
            "serve": "verinet._server.serve",
            "load_generator": "raw asyncio HTTP/1.1, keep-alive, in the benchmark's process",
            "e2e_runs": args.e2e_runs,
            "e2e_isolation": isolation,
        },
        "goals": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        root = Path(tmp)
        if args.part in ("http", "all"):
            with running_servers(root / "servers", samples, args.servers) as servers:
                http = measure_http(
                    servers, samples, args.levels, args.rounds, args.requests, args.warmup
                )
            reps = 50 if args.quick else 2000
            breakdown = node_breakdown(root / "breakdown", samples[GOAL_MODEL], reps)
            results["http"] = {"models": http, "breakdown": {GOAL_MODEL: breakdown}}
            for name, goal in HTTP_GOALS.items():
                if name not in http or "node/plain" not in http[name]["ratios"]:
                    continue
                worst = min(http[name]["ratios"]["node/plain"].values())
                results["goals"][f"http node {name}"] = {
                    "model": name,
                    "worst node/plain rps": worst,
                    "min": goal,
                    "met": worst >= goal,
                }
        if args.part in ("e2e", "all"):
            e2e = measure_e2e(root / "devnet", args.e2e_runs, 0 if args.quick else 1, isolation)
            results["e2e"] = e2e
            results["goals"]["e2e quorum(3)/signed"] = {
                "ratio": e2e["quorum/signed"],
                "max": E2E_GOAL,
                "met": e2e["quorum/signed"] <= E2E_GOAL,
            }
    return results


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    m, p = results["machine"], results["params"]
    console.print(
        f"{m['cores']} cores ({m['cpu']}, load {m['load_average_1m_at_start']} at start), "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, uvicorn {m['uvicorn']}, "
        f"fastapi {m['fastapi']}; served by {p['serve']}"
    )
    for name, r in results.get("http", {}).get("models", {}).items():
        levels = list(r["servers"]["plain"])
        rps = Table(
            title=f"POST /execute, {name} ({r['body_bytes']} B body): requests/s (p50 / p99 ms) "
            f"and x plain; {p['rounds']} x {p['timed_requests_per_round']} timed requests a cell"
        )
        inside = Table(
            title=f"{name}, inside the server, median µs: app (ASGI: routing, handler, "
            "response) / call (plain: session.run; node: Node.execute_async)"
        )
        for table in (rps, inside):
            table.add_column("server")
            for c in levels:
                table.add_column(f"{c} client(s)", justify="right")
        for key, cells in r["servers"].items():
            ratios = r["ratios"].get(f"{key}/plain", dict.fromkeys(levels, 1.0))
            rps.add_row(
                SERVERS[key],
                *(
                    f"{cells[c]['rps']:,.0f} ({cells[c]['p50_ms']:.2f} / "
                    f"{cells[c]['p99_ms']:.2f})  x{ratios[c]:.2f}"
                    for c in levels
                ),
            )
            inside.add_row(
                SERVERS[key],
                *(
                    f"{cells[c]['server_app_us']:,.0f} / {cells[c]['server_call_us']:,.0f}"
                    for c in levels
                ),
            )
        console.print(rps, inside)
    for name, b in results.get("http", {}).get("breakdown", {}).items():
        table = Table(
            title=f"The execute handler on {name}, step by step: median µs, warm, in a tight "
            "loop (the HTTP layer, common to both, left out)"
        )
        for col in ("server", "step", "µs"):
            table.add_column(col, justify="right" if col == "µs" else "left")
        for server in ("plain", "node"):
            for step, us in b[f"{server}_us"].items():
                table.add_row(server, step, f"{us:,.1f}")
        table.add_row(
            "node", "(Node.execute, thread, whole)", f"{b['node_execute_thread_us']:,.1f}"
        )
        for key, us in b["handler_total_us"].items():
            table.add_row(key, "= handler total", f"{us:,.1f}")
        console.print(table)
    if "e2e" in results:
        e = results["e2e"]
        table = Table(
            title=f"End to end, Client.infer on a devnet (embedded chain, {e['nodes']} nodes, "
            f"isolation={e['isolation']}), seconds; phases are medians"
        )
        for col in ("mode", "runs", "median", "p90", *(ph for _, ph in PHASES)):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for mode, f in e["modes"].items():
            table.add_row(
                mode,
                str(f["runs"]),
                f"{f['median_s']:.3f}",
                f"{f['p90_s']:.3f}",
                *(f"{v:.3f}" for v in f["phases_median_s"].values()),
            )
        console.print(table)
    for goal, g in results["goals"].items():
        shown = ", ".join(f"{k} {v}" for k, v in g.items() if k != "met")
        console.print(f"goal {goal}: {shown} -> {'MET' if g['met'] else 'NOT MET'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["http", "e2e", "all"], default="all")
    parser.add_argument(
        "--models",
        type=lambda s: s.split(","),
        default=["mlp", "mlp_1ms"],
        help="models for the HTTP figures, comma-separated: the devnet's samples "
        "(mlp, trees, cnn) and mlp_1ms (default mlp,mlp_1ms)",
    )
    parser.add_argument(
        "--levels",
        type=lambda s: tuple(int(c) for c in s.split(",")),
        default=LEVELS,
        help="concurrent clients, comma-separated (default 1,8,32)",
    )
    parser.add_argument(
        "--servers",
        type=lambda s: s.split(","),
        default=list(SERVERS),
        help="servers to measure, comma-separated (default: all; plain is the baseline)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--requests", type=int, default=600, help="timed requests a cell a round")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each")
    parser.add_argument("--e2e-runs", type=int, default=10, help="jobs per mode, end to end")
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    parser.add_argument("--json", "--out", dest="json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.servers[0] != "plain" or not set(args.servers) <= set(SERVERS):
        parser.error(f"--servers: plain first, then any of {', '.join(SERVERS)}")
    if args.serve:
        return serve_main(args.serve, args.data_dir)
    if args.quick:
        args.rounds, args.requests, args.warmup, args.e2e_runs = 1, 40, 10, 1
    results = run(args)
    print_tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
