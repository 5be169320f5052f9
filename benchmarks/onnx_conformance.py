"""ONNX backend node tests through Verinet's model check and executor.

Every case of onnx's backend node test suite (one op, or its function expansion, with reference
inputs and outputs) goes through the path a node takes with an untrusted model:

1. ``check_model(bytes)`` under the default `Limits`: loads under the allowlist, or is refused
   with a typed `UnsafeModel` (tallied by class);
2. ``OnnxExecutor(model)`` under the default profile (``disable_all``, one thread): onnxruntime
   (or the executor's IR/signature check) may refuse it (tallied by class and reason);
3. the reference inputs, fed by graph input name, are validated (the default input policy is
   tallied for information; the run uses ``allow_nonfinite=True`` and a 1 GiB cap) and run;
   outputs are compared with the reference (rtol 1e-3, atol 1e-7 like onnx's backend runner;
   exact for integers, bools and strings);
4. determinism: ``output_hash`` of a second run in the same session, of a fresh session with
   ``intra_op_threads=2``, and of a run in another process (worker subprocesses that hash every
   case on their own) must equal the first;
5. ``run_traced`` must give the untraced outputs bit for bit, and every op re-executed alone
   (``execute_op``) must hash to its trace entry (the dispute's one-step check).

Every step is wrapped: a `VerinetError` is a refusal (tallied), anything else is recorded as
``crash: <type>`` -- there should be none.

Where the cases come from: onnx wheels may not ship ``onnx/backend/test/data/node`` (onnx 1.23.2
here does not). The cases are then generated, once, from the generator onnx builds that folder
with (``onnx.backend.test.case.node``, numpy seeded with 0) into the same layout under the temp
directory; ``--data-dir`` points at any folder in that layout instead.

    python benchmarks/onnx_conformance.py                      # full run: table + JSON
    python benchmarks/onnx_conformance.py --limit 50           # smoke run
    python benchmarks/onnx_conformance.py --json out.json --processes 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from verinet.errors import UnsupportedSignature, VerinetError
from verinet.hub.manifest import ExecutionProfile, InputPolicy
from verinet.hub.safety import check_model
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.tensors import Array, group_hash

RTOL, ATOL = 1e-3, 1e-7
"""The tolerances of onnx's backend runner for node tests."""
PERMISSIVE = InputPolicy(allow_nonfinite=True, max_bytes=1 << 30)
THREADS_PROFILE = ExecutionProfile(intra_op_threads=2)
SEED = 0


# --- where the cases are --------------------------------------------------------------------


def packaged_node_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"verinet-onnx-node-cases-{onnx.__version__}"


def _has_cases(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/model.onnx"))


def node_cases_dir(data_dir: Path | None = None) -> Path:
    """The folder of node cases: `data_dir`, else onnx's own, else generated (once) into the
    temp directory."""
    if data_dir is not None:
        if not _has_cases(data_dir):
            raise SystemExit(f"{data_dir} holds no <case>/model.onnx")
        return data_dir
    if _has_cases(packaged_node_dir()):
        return packaged_node_dir()
    cache = default_cache_dir()
    if not (cache / "COMPLETE").exists():
        generate_node_cases(cache)
    return cache


def _proto_for(value: Any, type_proto: onnx.TypeProto, name: str) -> bytes:
    if isinstance(value, onnx.TensorProto):
        message: Any = value
    else:
        kind = type_proto.WhichOneof("value")
        if kind == "sequence_type":
            message = numpy_helper.from_list(value, name)
        elif kind == "optional_type":
            message = numpy_helper.from_optional(value, name)
        elif kind == "map_type":
            message = numpy_helper.from_dict(value, name)
        else:
            message = numpy_helper.from_array(np.asarray(value), name)
    return bytes(message.SerializeToString())


def generate_node_cases(dest: Path) -> int:
    """Write onnx's node test cases into `dest` in the layout of ``onnx/backend/test/data/node``
    (``<case>/model.onnx``, ``<case>/test_data_set_0/{input,output}_<i>.pb``). Atomic: the
    folder appears complete or not at all. Returns the number of cases written."""
    from onnx.backend.test.case import node as node_cases

    np.random.seed(SEED)  # the generators draw inputs from numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    written = 0
    for case in cases:
        if case.model is None or not case.data_sets:
            continue
        folder = staging / case.name
        data = folder / "test_data_set_0"
        data.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        graph = case.model.graph
        try:
            for kind, values, infos in (
                ("input", inputs, graph.input),
                ("output", outputs, graph.output),
            ):
                for j, value in enumerate(values):
                    info = infos[j]
                    (data / f"{kind}_{j}.pb").write_bytes(_proto_for(value, info.type, info.name))
        except Exception:  # a value numpy_helper cannot serialise: leave the case out
            shutil.rmtree(folder)
            continue
        written += 1
    (staging / "COMPLETE").write_text(f"{written} cases, onnx {onnx.__version__}, seed {SEED}\n")
    try:
        staging.rename(dest)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return written


def list_cases(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/model.onnx"))


# --- one case -------------------------------------------------------------------------------


@dataclass
class LoadedCase:
    name: str
    model_bytes: bytes
    proto: onnx.ModelProto
    non_tensor_io: bool
    inputs: dict[str, Array] = field(default_factory=dict)
    outputs: list[tuple[str, Array]] = field(default_factory=list)


def _is_tensor(value: onnx.ValueInfoProto) -> bool:
    return bool(value.type.WhichOneof("value") == "tensor_type")


def _to_array(tensor: onnx.TensorProto) -> Array:
    array = numpy_helper.to_array(tensor)
    if tensor.data_type == onnx.TensorProto.STRING:
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        array = np.array(flat, dtype=object).reshape(array.shape)
    return array


def load_case(root: Path, name: str) -> LoadedCase:
    """The model's bytes and, if every graph input/output is a tensor, the reference data."""
    folder = root / name
    model_bytes = (folder / "model.onnx").read_bytes()
    proto = onnx.ModelProto.FromString(model_bytes)
    weights = {init.name for init in proto.graph.initializer}
    feeds = [v for v in proto.graph.input if v.name not in weights]
    non_tensor = not all(_is_tensor(v) for v in [*feeds, *proto.graph.output])
    case = LoadedCase(name, model_bytes, proto, non_tensor)
    if non_tensor:
        return case
    data = folder / "test_data_set_0"
    for kind, infos, sink in (("input", feeds, None), ("output", proto.graph.output, 1)):
        for j, info in enumerate(infos):
            path = data / f"{kind}_{j}.pb"
            if not path.exists():
                continue  # an optional input the case leaves out
            array = _to_array(onnx.TensorProto.FromString(path.read_bytes()))
            if sink is None:
                case.inputs[info.name] = array
            else:
                case.outputs.append((info.name, array))
    return case


def _strings(array: Array) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(array).reshape(-1)]


def compare(reference: Array, actual: Array) -> str | None:
    """None if `actual` matches `reference` (allclose for floats, exact otherwise), else why."""
    reference, actual = np.asarray(reference), np.asarray(actual)
    if reference.shape != actual.shape:
        return f"shape {actual.shape} != reference {reference.shape}"
    if reference.dtype.kind in "OUS" or actual.dtype.kind in "OUS":
        return None if _strings(reference) == _strings(actual) else "strings differ"
    if reference.dtype != actual.dtype:
        return f"dtype {actual.dtype} != reference {reference.dtype}"
    if reference.dtype.kind in "fc":
        ok = np.allclose(
            actual.astype(np.complex128 if reference.dtype.kind == "c" else np.float64),
            reference.astype(np.complex128 if reference.dtype.kind == "c" else np.float64),
            rtol=RTOL,
            atol=ATOL,
            equal_nan=True,
        )
        return None if ok else "values differ beyond rtol=1e-3, atol=1e-7"
    return None if np.array_equal(actual, reference) else "values differ"


@dataclass
class CaseResult:
    name: str
    outcome: str
    """non_tensor_io | refused_safety | refused_executor | input_refused | run_failed | ran |
    crash"""
    error_class: str = ""
    message: str = ""
    stage: str = ""
    """Where a refusal or crash happened."""
    safety: str = "ok"
    """``ok`` or the class `check_model` refused with (checked for every case)."""
    default_policy: str = "ok"
    """``ok`` or the class the default input policy refuses the reference inputs with."""
    output_hash: str = ""
    match_reference: bool = False
    mismatch: str = ""
    same_session: bool = False
    threads: bool = False
    traced: bool = False
    one_step: bool = False
    trace_refused: str = ""  # why run_traced refused the model (float16: not replayable)
    ops: int = 0
    problems: list[str] = field(default_factory=list)
    """Non-fatal findings after the case ran: steps that refused or crashed, failing ops."""
    crashes: list[str] = field(default_factory=list)
    """``stage: ExceptionType: message`` for every unexpected exception."""
    seconds: float = 0.0


class _Step:
    """Runs one step; a `VerinetError` is a refusal, anything else a crash (both recorded)."""

    def __init__(self, result: CaseResult) -> None:
        self.result = result
        self.error: BaseException | None = None

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.error = None
        try:
            yield
        except VerinetError as exc:
            self.error = exc
            self.result.problems.append(f"{stage}: {type(exc).__name__}: {_line(exc)}")
        except Exception as exc:
            self.error = exc
            self.result.crashes.append(f"{stage}: {type(exc).__name__}: {_line(exc)}")

    @property
    def crashed(self) -> bool:
        return self.error is not None and not isinstance(self.error, VerinetError)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:1000] if text else ""


def _fail(result: CaseResult, outcome: str, stage: str, exc: BaseException) -> CaseResult:
    crashed = not isinstance(exc, VerinetError)
    result.outcome = "crash" if crashed else outcome
    result.stage, result.error_class, result.message = stage, type(exc).__name__, _line(exc)
    if crashed:
        # Already in `crashes` when it went through a _Step.
        entry = f"{stage}: {type(exc).__name__}: {_line(exc)}"
        if entry not in result.crashes:
            result.crashes.append(entry)
    result.problems.clear()
    return result


def evaluate_case(root: Path, name: str) -> CaseResult:
    """Every check of the module docstring for one case; never raises."""
    result = CaseResult(name, "crash")
    started = time.perf_counter()
    try:
        _evaluate_steps(root, name, result)
    except Exception as exc:  # defensive: a bug in this script rather than in Verinet
        _fail(result, "crash", "script", exc)
    result.seconds = round(time.perf_counter() - started, 4)
    return result


def _evaluate_steps(root: Path, name: str, result: CaseResult) -> None:
    step = _Step(result)
    try:
        case = load_case(root, name)
    except Exception as exc:
        _fail(result, "crash", "load case", exc)
        return

    model: onnx.ModelProto | None = None
    with step("check_model"):
        model = check_model(case.model_bytes)
    if step.error is not None:
        result.safety = type(step.error).__name__
    if case.non_tensor_io:
        result.outcome = "non_tensor_io"
        if step.crashed:
            _fail(result, "crash", "check_model", step.error)  # type: ignore[arg-type]
        result.problems.clear()
        return
    if step.error is not None:
        _fail(result, "refused_safety", "check_model", step.error)
        return
    assert model is not None

    try:
        executor = OnnxExecutor(model, input_policy=PERMISSIVE)
    except Exception as exc:
        _fail(result, "refused_executor", "OnnxExecutor", exc)
        return

    try:  # for information: what the default policy (finite floats, 16 MiB) says
        validate_inputs(executor.inputs, InputPolicy(), case.inputs)
    except VerinetError as exc:
        result.default_policy = type(exc).__name__
    except Exception as exc:
        result.default_policy = f"crash: {type(exc).__name__}"
        result.crashes.append(f"default input policy: {type(exc).__name__}: {_line(exc)}")

    try:
        feeds = executor.validate(case.inputs)
    except Exception as exc:
        _fail(result, "input_refused", "validate", exc)
        return
    try:
        outputs = executor.run_validated(feeds)
    except Exception as exc:
        _fail(result, "run_failed", "run", exc)
        return
    try:
        first = executor.output_hash(outputs)
    except Exception as exc:
        _fail(result, "crash", "output_hash", exc)
        return
    result.outcome = "ran"
    result.output_hash = first.hex()

    with step("compare with reference"):
        names = [n for n, _ in case.outputs]
        if names != list(outputs):
            result.mismatch = f"outputs {list(outputs)} != reference {names}"
        else:
            for out_name, reference in case.outputs:
                why = compare(reference, outputs[out_name])
                if why is not None:
                    result.mismatch = f"{out_name}: {why}"
                    break
        result.match_reference = not result.mismatch

    with step("second run, same session"):
        result.same_session = executor.output_hash(executor.run_validated(feeds)) == first

    with step("fresh session, 2 threads"):
        other = OnnxExecutor(model, profile=THREADS_PROFILE, input_policy=PERMISSIVE)
        result.threads = other.output_hash(other.run_validated(feeds)) == first

    trace = None
    with step("run_traced"):
        trace = executor.run_traced(feeds)
        result.ops = trace.ops
        result.traced = trace.output_hash == first and executor.output_hash(trace.outputs) == first
    if isinstance(step.error, UnsupportedSignature):
        result.trace_refused = str(step.error)
        result.problems.clear()
        return
    if trace is None:
        return
    bad: list[str] = []
    for index in range(1, trace.ops + 1):
        with step(f"execute_op {index}"):
            values = executor.execute_op(index, trace.step_inputs(index))
            if group_hash(list(values.items())) != trace.op_hashes[index - 1]:
                bad.append(f"op {index} ({trace.step(index).op_type})")
        if step.error is not None:
            bad.append(f"op {index} ({type(step.error).__name__})")
    result.one_step = not bad
    if bad:
        result.problems.append("one-step mismatch: " + ", ".join(bad[:5]))


def hash_case(root: Path, name: str) -> str | None:
    """The first run's output hash (hex), as the main pass computes it; None if it does not
    run. For the cross-process comparison."""
    try:
        case = load_case(root, name)
        if case.non_tensor_io:
            return None
        executor = OnnxExecutor(check_model(case.model_bytes), input_policy=PERMISSIVE)
        return executor.output_hash(executor.run(case.inputs)).hex()
    except Exception:
        return None


# --- the cross-process pass -----------------------------------------------------------------


def start_workers(root: Path, names: Sequence[str], processes: int) -> list[subprocess.Popen[str]]:
    """Worker subprocesses that hash the cases (round-robin shards) while this process runs
    the main pass; `collect_workers` gathers their {case: hash hex or None}."""
    workers = []
    for shard in range(max(1, processes)):
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
        with handle:
            json.dump(list(names[shard :: max(1, processes)]), handle)
        command = [sys.executable, str(Path(__file__).resolve()), "--data-dir", str(root)]
        workers.append(
            subprocess.Popen([*command, "--worker", handle.name], stdout=subprocess.PIPE, text=True)
        )
    return workers


def collect_workers(workers: Sequence[subprocess.Popen[str]]) -> dict[str, str | None]:
    hashes: dict[str, str | None] = {}
    for worker in workers:
        stdout, _ = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"cross-process worker exited with {worker.returncode}")
        hashes.update(json.loads(stdout))
    return hashes


def _worker(root: Path, names_file: Path) -> int:
    names = json.loads(names_file.read_text())
    names_file.unlink()
    hashes = {name: hash_case(root, name) for name in names}
    sys.stdout.write(json.dumps(hashes))
    return 0


# --- the suite ------------------------------------------------------------------------------


def select_cases(names: Sequence[str], *, every: int = 1, limit: int | None = None) -> list[str]:
    """A deterministic subset: every `every`-th case (in name order), then the first `limit`."""
    chosen = list(names[:: max(1, every)])
    return chosen if limit is None else chosen[:limit]


def run_suite(
    root: Path,
    names: Sequence[str],
    *,
    processes: int = 1,
    progress: bool = False,
) -> tuple[list[CaseResult], dict[str, str | None]]:
    """Evaluate every case in this process while `processes` workers hash them elsewhere."""
    workers = start_workers(root, names, processes)
    results = []
    try:
        for i, name in enumerate(names, 1):
            results.append(evaluate_case(root, name))
            if progress and i % 200 == 0:
                print(f"  {i}/{len(names)} cases", file=sys.stderr, flush=True)
    finally:
        cross = collect_workers(workers)
    return results, cross


_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : (\w+)")
_ORT_REASONS = (
    ("ValidateOpsetForDomain", "opset newer than onnxruntime implements"),
    ("Could not find an implementation", "no kernel for this op version / type"),
    ("Exception during initialization", "kernel refused its attributes"),
    ("Unrecognized attribute", "attribute onnxruntime does not know"),
)


def refusal_reason(result: CaseResult) -> str:
    """A coarse reason for an executor refusal: the error class and what was refused."""
    message = result.message
    if "IR version" in message:
        return f"{result.error_class}: IR version > 13"
    if "element type" in message:
        return f"{result.error_class}: element type Verinet does not carry"
    status = _ORT_STATUS.search(message)
    reason = next((why for key, why in _ORT_REASONS if key in message), message[:60])
    return f"{result.error_class}: {status.group(1) + ', ' if status else ''}{reason}"


def summarize(results: Sequence[CaseResult], cross: dict[str, str | None]) -> dict[str, Any]:
    ran = [r for r in results if r.outcome == "ran"]
    traceable = [r for r in ran if not r.trace_refused]
    across_processes = [r for r in ran if cross.get(r.name) == r.output_hash]

    def names(rows: Sequence[CaseResult]) -> list[str]:
        return [r.name for r in rows]

    def tally(rows: Sequence[CaseResult], key: Any) -> dict[str, int]:
        return dict(Counter(key(r) for r in rows).most_common())

    of = {kind: [r for r in results if r.outcome == kind] for kind in _OUTCOMES}
    counts = {
        "total cases": len(results),
        "non-tensor IO": len(of["non_tensor_io"]),
        "load under allowlist (all cases)": sum(r.safety == "ok" for r in results),
        "refused by safety": len(of["refused_safety"]),
        "refused by onnxruntime / executor": len(of["refused_executor"]),
        "input refused": len(of["input_refused"]),
        "run failed": len(of["run_failed"]),
        "ran": len(ran),
        "match reference": sum(r.match_reference for r in ran),
        "bit-identical across runs": sum(r.same_session for r in ran),
        "bit-identical across threads (1 vs 2)": sum(r.threads for r in ran),
        "bit-identical across processes": len(across_processes),
        "trace refused (float16, not replayable)": sum(bool(r.trace_refused) for r in ran),
        "traced equal": sum(r.traced for r in traceable),
        "one-step equal": sum(r.one_step for r in traceable),
        "cases with a crash": sum(bool(r.crashes) for r in results),
    }
    by_class = {
        "refused by safety": tally(of["refused_safety"], lambda r: r.error_class),
        "non-tensor IO, safety verdict": tally(of["non_tensor_io"], lambda r: r.safety),
        "refused by onnxruntime / executor": tally(of["refused_executor"], refusal_reason),
        "input refused": tally(of["input_refused"], lambda r: r.error_class),
        "run failed": tally(of["run_failed"], lambda r: r.error_class),
        "default input policy (informational, cases that loaded)": tally(
            [*ran, *of["input_refused"], *of["run_failed"]], lambda r: r.default_policy
        ),
        "crashes": dict(
            Counter(f"crash: {c.split(': ')[1]}" for r in results for c in r.crashes).most_common()
        ),
    }
    lists = {
        "not bit-identical across runs": names([r for r in ran if not r.same_session]),
        "not bit-identical across threads": names([r for r in ran if not r.threads]),
        "not bit-identical across processes": sorted(
            set(names(ran)) - set(names(across_processes))
        ),
        "trace refused": names([r for r in ran if r.trace_refused]),
        "not traced equal": names([r for r in traceable if not r.traced]),
        "not one-step equal": names([r for r in traceable if not r.one_step]),
        "not matching reference": {r.name: r.mismatch for r in ran if not r.match_reference},
        "run failed": {r.name: r.message for r in of["run_failed"]},
        "input refused": {r.name: r.message for r in of["input_refused"]},
        "non-tensor IO passed safety": names([r for r in of["non_tensor_io"] if r.safety == "ok"]),
        "problems after running": {r.name: r.problems for r in ran if r.problems},
        "crashes": {r.name: r.crashes for r in results if r.crashes},
    }
    slowest = sorted(results, key=lambda r: -r.seconds)[:10]
    return {
        "versions": {
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "counts": counts,
        "by_class": by_class,
        "lists": lists,
        "slowest_cases_s": {r.name: r.seconds for r in slowest},
    }


_OUTCOMES = (
    "non_tensor_io",
    "refused_safety",
    "refused_executor",
    "input_refused",
    "run_failed",
    "ran",
    "crash",
)


def print_report(summary: dict[str, Any], out: Any = sys.stdout) -> None:
    counts = summary["counts"]
    total = counts["total cases"] or 1
    keys = [*counts, *(f"  {k}" for tally in summary["by_class"].values() for k in tally)]
    width = max(len(k) for k in keys) + 2
    print(f"{'ONNX backend node tests':<{width}} {'cases':>6} {'share':>7}", file=out)
    for key, value in counts.items():
        print(f"{key:<{width}} {value:>6} {100 * value / total:>6.1f}%", file=out)
    for title, tally in summary["by_class"].items():
        if tally:
            print(f"\n{title}:", file=out)
            for key, value in tally.items():
                print(f"{'  ' + key:<{width}} {value:>6}", file=out)
    for title in (
        "not bit-identical across runs",
        "not bit-identical across threads",
        "not bit-identical across processes",
        "not traced equal",
        "not one-step equal",
        "crashes",
    ):
        found = summary["lists"][title]
        print(f"\n{title}: {len(found)}", file=out)
        for name in list(found)[:50]:
            print(f"  {name}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="run only the first N cases")
    parser.add_argument("--every", type=int, default=1, help="run every K-th case (by name)")
    parser.add_argument("--json", type=Path, default=None, help="write counts and lists here")
    parser.add_argument(
        "--processes", type=int, default=1, help="worker processes of the cross-process pass"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="a folder of node cases")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    root = node_cases_dir(args.data_dir)
    if args.worker is not None:
        return _worker(root, args.worker)
    started = time.perf_counter()
    names = select_cases(list_cases(root), every=args.every, limit=args.limit)
    print(f"{len(names)} cases from {root}", file=sys.stderr)
    results, cross = run_suite(root, names, processes=args.processes, progress=True)
    summary = summarize(results, cross)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["data_dir"] = str(root)
    print_report(summary)
    print(f"\n{len(names)} cases in {summary['seconds']} s")
    if args.json is not None:
        summary["cases"] = [asdict(r) for r in results]
        args.json.write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
    return 1 if summary["counts"]["cases with a crash"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
