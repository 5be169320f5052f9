"""zk mode: what Verinet's proving pipeline adds to the bare ezkl calls, and what it saves.

Per MLP (4-8-2, 16-32-4, 32-64-8; batch 1; seeded weights and input), in the same run:

    raw      the bare ezkl calls in this process, with the run arguments Verinet chose for the
             model and the same SRS file: gen_settings, calibrate_settings, compile_circuit,
             setup | gen_witness, prove | verify
    verinet  build_artifacts (its steps up to setup, timed through its progress callback; its
             verifier steps, ezkl's Solidity rendering and the solcjs compile, shown apart),
             prove, verify. ezkl's heavy steps run in worker processes that outlive a call
             (see verinet.verification._ezkl), so these are a running node's figures; "cold"
             is one proof after `close_workers`, the first proof of a process (worker start
             and ezkl import included)
    default  the raw calls with ezkl's default range-check decomposition (16384 x 2), which is
             what Verinet's choice of decomposition saves against (not in --quick)

Each size first gets an untimed warm-up build, whose generated (testing-only) SRS then serves
every timed run; the default runs get their own SRS. Timed runs interleave the three, `--reps`
times; figures are medians. Verinet's overhead goal is <= 1.10x raw for setup, prove and
verify. Also reported: proof, key and verifier sizes, and the gas of one verifyProof
transaction on the embedded EVM.

    python benchmarks/bench_zk.py                 # table + JSON
    python benchmarks/bench_zk.py --quick         # CI smoke run (smallest size, one rep)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from verinet.chain import EmbeddedChain
from verinet.devnet.models import mlp
from verinet.verification.zk import (
    CircuitArtifacts,
    ZkProof,
    build_artifacts,
    close_workers,
    prove,
    verifier_calldata,
    verify,
)

SIZES: dict[str, tuple[int, ...]] = {
    "4-8-2": (4, 8, 2),
    "16-32-4": (16, 32, 4),
    "32-64-8": (32, 64, 8),
}
GOAL = 1.10
DEFAULT_DECOMPOSITION = (16384, 2)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_zk.json"


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """ezkl prints calibration tables to fd 2; keep them off the benchmark's console."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class RawEzkl:
    """The bare ezkl call sequence for one model, in this process, in its own folder."""

    def __init__(self, folder: Path, model: Path, data: Path, srs: Path, run_args: Any) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model, self.data, self.srs, self.run_args = str(model), str(data), str(srs), run_args
        self.settings, self.compiled = str(folder / "settings.json"), str(folder / "model.ezkl")
        self.vk, self.pk = str(folder / "vk.key"), str(folder / "pk.key")
        self.witness, self.proof = str(folder / "witness.json"), str(folder / "proof.json")

    def calibrate(self) -> None:
        import ezkl

        ezkl.gen_settings(self.model, self.settings, self.run_args)
        ezkl.calibrate_settings(
            self.data, self.model, self.settings, "resources", 2.0, None, [1], None
        )

    def setup(self) -> None:
        import ezkl

        self.calibrate()
        ezkl.compile_circuit(self.model, self.compiled, self.settings)
        ezkl.setup(self.compiled, self.vk, self.pk, self.srs, None, False)

    def prove(self) -> None:
        import ezkl

        ezkl.gen_witness(self.data, self.compiled, self.witness, None, self.srs)
        ezkl.prove(self.witness, self.compiled, self.pk, self.proof, self.srs)

    def verify(self) -> None:
        import ezkl

        assert ezkl.verify(self.proof, self.settings, self.vk, self.srs, True)  # as Verinet

    def logrows(self) -> int:
        return int(json.loads(Path(self.settings).read_text())["run_args"]["logrows"])


def run_args_like(artifacts: CircuitArtifacts, decomposition: tuple[int, int] | None) -> Any:
    """ezkl run arguments as Verinet set them for `artifacts` (or with another decomposition)."""
    import ezkl

    chosen = json.loads(artifacts.settings.read_text())["run_args"]
    args = ezkl.PyRunArgs()
    args.input_visibility, args.output_visibility, args.param_visibility = (
        "public",
        "public",
        "fixed",
    )
    args.variables = [tuple(v) for v in chosen["variables"]]
    args.decomp_base, args.decomp_legs = decomposition or (
        chosen["decomp_base"],
        chosen["decomp_legs"],
    )
    return args


def verify_gas(artifacts: CircuitArtifacts, proof: ZkProof) -> int:
    chain = EmbeddedChain(accounts=1)
    sender = chain.accounts[0].address
    address = chain.deploy(artifacts.verifier_bytecode, sender=sender).contract_address
    assert address is not None
    return chain.transact(address, verifier_calldata(artifacts, proof), sender=sender).gas_used


def measure(
    label: str,
    dims: tuple[int, ...],
    work: Path,
    reps: int,
    verify_reps: int,
    with_default: bool,
) -> dict[str, Any]:
    import ezkl

    model_bytes = mlp(dims, seed=0).SerializeToString()
    x = np.random.default_rng(0).standard_normal((1, dims[0])).astype(np.float32)
    folder = work / label
    folder.mkdir(parents=True)
    model, data = folder / "model.onnx", folder / "input.json"
    model.write_bytes(model_bytes)
    data.write_text(json.dumps({"input_data": [x.astype(np.float64).ravel().tolist()]}))

    warm = build_artifacts(model_bytes, {"x": x}, folder / "warm-up")  # generates the SRS
    srs = warm.srs
    raw = RawEzkl(folder / "raw", model, data, srs, run_args_like(warm, None))
    default = None
    if with_default:
        default = RawEzkl(
            folder / "default",
            model,
            data,
            folder / "default.srs",
            run_args_like(warm, DEFAULT_DECOMPOSITION),
        )
        with quiet_stderr():
            default.calibrate()
            ezkl.gen_srs(default.srs, default.logrows())

    times: dict[str, list[float]] = {}

    def add(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    artifacts = warm
    for rep in range(reps):
        with quiet_stderr():
            add("raw setup", timed(raw.setup))
            if default is not None:
                add("default setup", timed(default.setup))
        marks: dict[str, float] = {}

        def mark(step: str, _done: int, _total: int, marks: dict[str, float] = marks) -> None:
            marks.setdefault(step, time.perf_counter())

        start = time.perf_counter()
        artifacts = build_artifacts(
            model_bytes, {"x": x}, folder / f"verinet-{rep}", srs_path=srs, progress=mark
        )
        end = time.perf_counter()
        add("verinet setup", marks["verifier"] - start)
        add("verinet verifier", end - marks["verifier"])
        add("verinet build", end - start)
        with quiet_stderr():
            add("raw prove", timed(raw.prove))
            if default is not None:
                add("default prove", timed(default.prove))
        add("verinet prove", timed(partial(prove, artifacts, {"x": x})))
    close_workers()
    add("verinet prove cold", timed(partial(prove, artifacts, {"x": x})))
    proof = prove(artifacts, {"x": x})
    assert verify(artifacts, proof)

    for _ in range(verify_reps):
        add("raw verify", timed(raw.verify))
        add("verinet verify", timed(partial(verify, artifacts, proof)))

    med = {k: statistics.median(v) for k, v in times.items()}
    chosen = json.loads(artifacts.settings.read_text())["run_args"]
    result: dict[str, Any] = {
        "dims": list(dims),
        "logrows": artifacts.logrows,
        "decomposition": [chosen["decomp_base"], chosen["decomp_legs"]],
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratios": {
            f"{step} verinet/raw": round(med[f"verinet {step}"] / med[f"raw {step}"], 3)
            for step in ("setup", "prove", "verify")
        },
        "sizes": {
            "proof_bytes": len(proof.proof),
            "instances": len(proof.instances),
            "pk_bytes": artifacts.pk.stat().st_size,
            "vk_bytes": artifacts.vk.stat().st_size,
            "verifier_runtime_bytes": artifacts.verifier_runtime_size,
            "optimizer_runs": artifacts.optimizer_runs,
        },
        "verify_gas_embedded": verify_gas(artifacts, proof),
    }
    if default is not None:
        result["default"] = {
            "logrows": default.logrows(),
            "pk_bytes": Path(default.pk).stat().st_size,
            "setup default/verinet": round(med["default setup"] / med["verinet setup"], 2),
            "prove default/verinet": round(med["default prove"] / med["verinet prove"], 2),
        }
    return result


def run(
    sizes: dict[str, tuple[int, ...]], reps: int, verify_reps: int, with_default: bool
) -> dict[str, Any]:
    from importlib.metadata import version

    results: dict[str, Any] = {
        "params": {
            "reps": reps,
            "verify_reps": verify_reps,
            "with_default": with_default,
            "ezkl": version("ezkl"),
            "cpus": os.cpu_count(),
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-zk-") as tmp:
        work = Path(tmp)
        # The raw calls run in this process: point ezkl's per-process cache away from ~/.ezkl.
        os.environ["EZKL_REPO_PATH"] = str(work / "raw-ezkl-cache")
        for label, dims in sizes.items():
            results["models"][label] = measure(label, dims, work, reps, verify_reps, with_default)
    worst = {
        measure_: max(m["ratios"][f"{measure_} verinet/raw"] for m in results["models"].values())
        for measure_ in ("setup", "prove", "verify")
    }
    results["goal"] = {"max": GOAL, "worst": worst, "met": all(r <= GOAL for r in worst.values())}
    return results


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    p = results["params"]
    overhead = Table(
        title=f"Verinet vs raw ezkl {p['ezkl']}, median seconds of {p['reps']} runs "
        f"(verify: {p['verify_reps']}), {p['cpus']} CPUs; same run arguments and SRS"
    )
    for col in (
        "MLP",
        "logrows",
        "setup raw",
        "setup verinet",
        "ratio",
        "+verifier",
        "prove raw",
        "prove verinet",
        "ratio",
        "cold",
        "verify raw",
        "verify verinet",
        "ratio",
    ):
        overhead.add_column(col, justify="left" if col == "MLP" else "right")
    saved = Table(
        title="What the decomposition choice saves: ezkl's default (16384 x 2) vs Verinet's"
    )
    for col in ("MLP", "logrows", "setup", "prove", "pk MB", "setup x", "prove x"):
        saved.add_column(col, justify="left" if col == "MLP" else "right")
    sizes = Table(title="Artifacts and on-chain cost")
    for col in (
        "MLP",
        "proof B",
        "instances",
        "pk MB",
        "vk KB",
        "verifier B",
        "runs",
        "verify gas",
    ):
        sizes.add_column(col, justify="left" if col == "MLP" else "right")
    for label, m in results["models"].items():
        t, r, s = m["median_s"], m["ratios"], m["sizes"]
        overhead.add_row(
            label,
            str(m["logrows"]),
            f"{t['raw setup']:.3f}",
            f"{t['verinet setup']:.3f}",
            f"{r['setup verinet/raw']:.2f}",
            f"{t['verinet verifier']:.3f}",
            f"{t['raw prove']:.3f}",
            f"{t['verinet prove']:.3f}",
            f"{r['prove verinet/raw']:.2f}",
            f"{t['verinet prove cold']:.3f}",
            f"{t['raw verify']:.4f}",
            f"{t['verinet verify']:.4f}",
            f"{r['verify verinet/raw']:.2f}",
        )
        if "default" in m:
            d = m["default"]
            saved.add_row(
                label,
                f"{d['logrows']} -> {m['logrows']}",
                f"{t['default setup']:.3f} -> {t['verinet setup']:.3f}",
                f"{t['default prove']:.3f} -> {t['verinet prove']:.3f}",
                f"{d['pk_bytes'] / 1e6:.1f} -> {s['pk_bytes'] / 1e6:.1f}",
                f"{d['setup default/verinet']:.1f}",
                f"{d['prove default/verinet']:.1f}",
            )
        sizes.add_row(
            label,
            f"{s['proof_bytes']:,}",
            str(s["instances"]),
            f"{s['pk_bytes'] / 1e6:.1f}",
            f"{s['vk_bytes'] / 1e3:.1f}",
            f"{s['verifier_runtime_bytes']:,}",
            str(s["optimizer_runs"]),
            f"{m['verify_gas_embedded']:,}",
        )
    for shown in (overhead, saved, sizes):
        if shown.row_count:
            console.print(shown)
    goal = results["goal"]
    worst = ", ".join(f"{k} {v:.2f}x" for k, v in goal["worst"].items())
    console.print(
        f"goal verinet <= {goal['max']}x raw (worst over sizes: {worst}) -> "
        f"{'MET' if goal['met'] else 'NOT MET'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="timed setups and proofs per size")
    parser.add_argument("--verify-reps", type=int, default=100, help="timed verifications per size")
    parser.add_argument(
        "--quick", action="store_true", help="smallest size, one rep, no default (CI smoke)"
    )
    parser.add_argument("--json", "--out", dest="json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    reps, verify_reps = (1, 3) if args.quick else (args.reps, args.verify_reps)
    results = run(sizes, reps, verify_reps, with_default=not args.quick)
    print_tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
