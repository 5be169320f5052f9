"""What Verinet's executor adds to a model run: validation, output hash, traced commitment.

Per model (a tiny MLP, an MLP sized so one raw run takes about 1 ms, a small CNN; batch 1):

    raw       onnxruntime session with Verinet's profile options, ``sess.run(None, feeds)``
    untraced  ``executor.run(feeds)`` (input validation + session.run under the run deadline)
    hashed    ``executor.output_hash(executor.run(feeds))`` (what a node signs)
    traced    ``executor.run_traced(feeds)`` (every op's outputs, hashed, chained, Merkle root)
    hash      ``group_hash`` of everything a traced run hashes (each op's outputs, in, out)

The baseline (raw) is measured in the same run, interleaved with the others in primed blocks
(see `interleaved`), after a warm-up; figures are medians and p90 of per-call wall time. The goal
is traced <= 1.15x untraced on the ~1 ms MLP. The traced run is also split into its steps,
each timed in place: validate, session_run (all op outputs exposed, through `run_session` and
its deadline watchdog), op_hashes / io_hashes (sha256 `group_hash`), chain / merkle (the
trace commitment, sha256 over 64-byte words).

    python benchmarks/bench_executor.py                 # table + JSON
    python benchmarks/bench_executor.py --quick         # CI smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from verinet.devnet.models import cnn, mlp
from verinet.hub import cid as cids
from verinet.hub.manifest import ExecutionProfile
from verinet.protocol.trace import hash_chain, initial_link, merkle_root
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.session import open_session, providers, run_session, session_options
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.trace import op_outputs, traced_model

GOAL_MODEL = "~1 ms MLP"
GOAL = 1.15
MLP_1MS: tuple[int, ...] = (1536, 1536, 1536, 1536, 256)
"""Raw run about 1.0 ms on the reference machine (2 cores, 1 intra-op thread, ort 1.31)."""
MEASURES = ("raw", "untraced", "hashed", "traced", "hash")
STAGES = ("validate", "session_run", "op_hashes", "io_hashes", "chain", "merkle")
PRIME, BLOCK = 3, 5
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_executor.json"


def sample_models(mlp_dims: tuple[int, ...]) -> dict[str, tuple[onnx.ModelProto, str, Array]]:
    rng = np.random.default_rng(0)

    def x(*shape: int) -> Array:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "tiny MLP": (mlp((16, 32, 4), batch=1), "(16, 32, 4)", x(1, 16)),
        GOAL_MODEL: (mlp(mlp_dims, batch=1), str(mlp_dims), x(1, mlp_dims[0])),
        "small CNN": (cnn(), "3x32x32, channels (8, 16)", x(1, 3, 32, 32)),
    }


def interleaved(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int
) -> tuple[dict[str, dict[str, float]], list[Any]]:
    """Median and p90 (µs) per function, and what the timed calls of `split` returned.

    Blocks in a seeded random order: per block, each function runs PRIME untimed calls, then
    BLOCK timed ones. Every session holds its own copy of the weights, and on this machine the
    first calls after another session ran are up to 2x slower (the last-level cache refills over
    about three runs); the primed blocks time each path warm, as on a node serving one model.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    kept: list[Any] = []
    clock, order = time.perf_counter, np.random.default_rng(0)
    for _ in range(-(-reps // BLOCK)):
        for name in (names[i] for i in order.permutation(len(names))):
            fn = fns[name]
            for _ in range(PRIME):
                fn()
            for _ in range(BLOCK):
                start = clock()
                out = fn()
                samples[name].append(clock() - start)
                if name == "split":
                    kept.append(out)
    stats = {
        name: {
            "median_us": round(float(np.median(s)) * 1e6, 1),
            "p90_us": round(float(np.percentile(s, 90)) * 1e6, 1),
        }
        for name, s in samples.items()
    }
    return stats, kept


def measure(
    model: onnx.ModelProto, feed: Array, profile: ExecutionProfile, reps: int, warmup: int
) -> dict[str, Any]:
    options, provs = session_options(profile), providers(profile)
    raw = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=provs)
    executor = OnnxExecutor(model, profile=profile)
    feeds = {executor.inputs[0].name: feed}
    trace = executor.run_traced(feeds)  # opens the traced session outside the timings
    nodes = list(model.graph.node)
    cid = cids.to_bytes(executor.model_cid)  # once per model, as `Tracer` does

    def hash_all() -> list[bytes]:
        ops = [group_hash([(n, trace.values[n]) for n in op_outputs(node)]) for node in nodes]
        return [*ops, executor.input_hash(feeds), executor.output_hash(trace.outputs)]

    # run_traced's steps (as in `Tracer.run`), each one timed in place.
    traced = traced_model(model)
    session = open_session(traced.SerializeToString(), profile)
    names = [value.name for value in traced.graph.output]

    def split() -> list[float]:
        marks = [time.perf_counter()]
        lap = marks.append
        valid = executor.validate(feeds)
        lap(time.perf_counter())
        ran = run_session(session, names, valid, timeout=executor.timeout)
        values = dict(zip(names, ran, strict=True))
        lap(time.perf_counter())
        ops = [group_hash([(n, values[n]) for n in op_outputs(node)]) for node in nodes]
        lap(time.perf_counter())
        in_hash = executor.input_hash(valid)
        executor.output_hash(values)  # the trace's in/out hashes
        lap(time.perf_counter())
        hash_chain(initial_link(cid, in_hash), ops)
        lap(time.perf_counter())
        merkle_root(ops)
        lap(time.perf_counter())
        return list(np.diff(marks))

    times, kept = interleaved(
        {
            "raw": lambda: raw.run(None, feeds),
            "untraced": lambda: executor.run(feeds),
            "hashed": lambda: executor.output_hash(executor.run(feeds)),
            "traced": lambda: executor.run_traced(feeds),
            "hash": hash_all,
            "split": split,
        },
        reps,
        warmup,
    )
    med = {name: t["median_us"] for name, t in times.items()}
    split_us = np.median(np.array(kept), axis=0) * 1e6
    breakdown = {name: round(float(us), 1) for name, us in zip(STAGES, split_us, strict=True)}
    breakdown["other"] = round(med["traced"] - float(split_us.sum()), 1)
    width = 1 << max(0, len(nodes) - 1).bit_length()
    return {
        "ops": len(nodes),
        "commitment_hashes_per_traced_run": (len(nodes) + 1) + len(nodes) + (width - 1),
        "times": {name: times[name] for name in MEASURES},
        "ratios": {
            "untraced/raw": round(med["untraced"] / med["raw"], 3),
            "hashed/raw": round(med["hashed"] / med["raw"], 3),
            "traced/untraced": round(med["traced"] / med["untraced"], 3),
            "traced/raw": round(med["traced"] / med["raw"], 3),
            "hash share of traced": round(med["hash"] / med["traced"], 3),
        },
        "traced_overhead_us": round(med["traced"] - med["untraced"], 1),
        "traced_split_us": breakdown,
    }


def run(reps: int, warmup: int, threads: int, mlp_dims: tuple[int, ...]) -> dict[str, Any]:
    profile = ExecutionProfile(intra_op_threads=threads)
    results: dict[str, Any] = {
        "params": {
            "timed_calls": reps,
            "warmup": warmup,
            "block": f"{PRIME} untimed + {BLOCK} timed calls",
            "intra_op_threads": threads,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
        "models": {},
    }
    for label, (model, shape, feed) in sample_models(mlp_dims).items():
        results["models"][label] = {"shape": shape, **measure(model, feed, profile, reps, warmup)}
    ratio = results["models"][GOAL_MODEL]["ratios"]["traced/untraced"]
    results["goal"] = {"model": GOAL_MODEL, "traced/untraced": ratio, "max": GOAL}
    results["goal"]["met"] = ratio <= GOAL
    return results


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)

    def table(title: str, *columns: str) -> Table:
        out = Table(title=title)
        for col in ("model", *columns):
            out.add_column(col, justify="left" if col == "model" else "right")
        return out

    p, first = results["params"], next(iter(results["models"].values()))
    times = table(
        f"Per-call time, µs: median (p90); {p['timed_calls']} timed calls each, "
        f"{p['intra_op_threads']} intra-op thread(s), onnxruntime {p['onnxruntime']}",
        *("ops", *MEASURES),
    )
    ratios = table("Ratios of medians", *first["ratios"])
    parts = table(
        "Traced run split into its steps, median µs (other = traced - sum of the steps)",
        *("traced", "- untraced", *first["traced_split_us"], "chain+tree hashes"),
    )
    for name, m in results["models"].items():
        t = m["times"]
        times.add_row(
            name,
            str(m["ops"]),
            *(f"{t[k]['median_us']:,.1f} ({t[k]['p90_us']:,.1f})" for k in MEASURES),
        )
        ratios.add_row(name, *(f"{v:.2f}" for v in m["ratios"].values()))
        parts.add_row(
            name,
            f"{t['traced']['median_us']:,.1f}",
            f"{m['traced_overhead_us']:,.1f}",
            *(f"{v:,.1f}" for v in m["traced_split_us"].values()),
            str(m["commitment_hashes_per_traced_run"]),
        )
    console.print("models: " + "; ".join(f"{k} {m['shape']}" for k, m in results["models"].items()))
    for shown in (times, ratios, parts):
        console.print(shown)
    goal = results["goal"]
    verdict = "MET" if goal["met"] else "NOT MET"
    console.print(
        f"goal traced <= {goal['max']}x untraced on the {goal['model']}: "
        f"{goal['traced/untraced']:.2f}x -> {verdict}"
    )
    raw = results["models"][GOAL_MODEL]["times"]["raw"]["median_us"]
    if not 800 <= raw <= 1500:
        console.print(f"note: raw {GOAL_MODEL} took {raw:,.0f} µs here; adjust --mlp-dims")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=300, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, all sessions")
    parser.add_argument(
        "--mlp-dims",
        type=lambda s: tuple(int(d) for d in s.split(",")),
        default=MLP_1MS,
        help="dims of the ~1 ms MLP, comma-separated (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    parser.add_argument("--json", "--out", dest="json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    reps, warmup = (BLOCK, 1) if args.quick else (-(-args.reps // BLOCK) * BLOCK, 10)
    results = run(reps, warmup, args.threads, args.mlp_dims)
    print_tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
