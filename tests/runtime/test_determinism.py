"""Bit-exact determinism of `OnnxExecutor` outputs: what honest nodes can and cannot agree on.

Outputs are compared by `OnnxExecutor.output_hash` (sha2-256 of the canonical bytes), so
"identical" means bit for bit. Measured with onnxruntime 1.31.1 / onnx 1.23.2 / numpy 2.4 /
scikit-learn 1.9 / skl2onnx 1.20 on x86-64 (AVX-512):

- Within one profile, repeated runs and fresh sessions are always identical.
- ``disable_all``: every hand-built model (MatMul, Conv, LayerNormalization, Softmax, ...) is
  identical for 1, 2 and 4 intra-op threads, and so are the linear and MLP sklearn models.
- Levels above ``disable_all`` rewrite the graph and may change bits (`EXPECTED_MATRIX`): the
  MatMul+Add -> Gemm fusion (``basic``) changes bits only when a layer's fan-in exceeds 256 (MLAS
  accumulates K in blocks of 256 and Gemm starts from the bias instead of adding it at the
  end), ``extended`` changes the attention block (LayerNorm/attention fusions), ``all`` changes
  the CNN (NCHWc layouts). The differences are a few float32 ulps (< 1e-6).
- Tree ensembles (TreeEnsembleClassifier) sum tree votes in thread-dependent order: the
  probabilities change with intra_op_threads at every level, and predicted labels flip where
  two classes tie. The same thread count is identical. Profiles pin the thread count for that.
- Row i of a batch equals the batch-of-1 run of row i at one thread for the hand-built models,
  the sklearn MLPs and tree ensembles (so nodes may batch those freely), but not for the
  ai.onnx.ml linear kernels (LinearRegressor, LinearClassifier: rounding differs by batch
  size), nor for tree ensembles at 2 threads. There, honest nodes must be given the same batch.
- A separate process computes the same hashes.
- ``run_traced`` outputs equal ``run`` outputs, and every op re-executed alone hashes to its
  trace entry, for every model here (all float32). float16 models do not replay op by op
  on onnxruntime's CPU provider, so Verinet refuses to trace them (tested at the end).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.runtime import _sklearn_models as skm
from verinet.devnet import models as samples
from verinet.errors import UnsupportedSignature
from verinet.hub.files import file_cid
from verinet.hub.manifest import ExecutionProfile, OptimizationLevel
from verinet.hub.publish import draft_manifest
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import Array, group_hash

ROOT = Path(__file__).resolve().parents[2]
LEVELS: tuple[OptimizationLevel, ...] = ("disable_all", "basic", "extended", "all")
THREADS = (1, 2, 4)
# Where two profiles differ, outputs must still agree within this (a few float32 ulps of
# values of order 1-100): a larger difference means an optimisation changed the maths.
RTOL, ATOL = 1e-5, 1e-5

Feeds = dict[str, Array]


# --- the models -----------------------------------------------------------------------------

HAND_BUILT: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": samples.mlp,
    "mlp_big": lambda: samples.mlp((64, 256, 256, 10)),
    "mlp_wide": lambda: samples.mlp((512, 64, 10)),  # fan-in 512 > 256: Gemm fusion shows
    "cnn": samples.cnn,
    "attention": samples.attention,
}
HAND_BUILT_INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "mlp": ("x", (8, 16)),
    "mlp_big": ("x", (32, 64)),
    "mlp_wide": ("x", (16, 512)),
    "cnn": ("image", (4, 3, 32, 32)),
    "attention": ("x", (2, 16, 32)),
}
TREES = ("random_forest", "gradient_boosting")


def hand_built_feeds(name: str) -> Feeds:
    input_name, shape = HAND_BUILT_INPUTS[name]
    rng = np.random.default_rng(sum(name.encode()))
    return {input_name: rng.standard_normal(shape).astype(np.float32)}


@cache
def all_models() -> dict[str, tuple[bytes, Feeds]]:
    """name -> (model file bytes, seeded inputs); built once per process."""
    models = {
        name: (build().SerializeToString(), hand_built_feeds(name))
        for name, build in HAND_BUILT.items()
    }
    for name, (proto, x) in skm.sklearn_models().items():
        models[name] = (proto.SerializeToString(), {"X": x})
    return models


SKLEARN = ("linear_regression", "logistic_regression", *TREES, "mlp_classifier", "mlp_regressor")
MODELS = (*HAND_BUILT, *SKLEARN)


def executor(name: str, level: OptimizationLevel = "disable_all", threads: int = 1) -> OnnxExecutor:
    model, _ = all_models()[name]
    profile = ExecutionProfile(graph_optimization=level, intra_op_threads=threads)
    return OnnxExecutor(model, profile=profile)


def _differences(a: dict[str, Array], b: dict[str, Array]) -> float:
    """Largest absolute difference over float outputs; asserts non-float outputs are equal
    and floats agree within RTOL/ATOL."""
    worst = 0.0
    for key in a:
        x, y = a[key], b[key]
        assert x.shape == y.shape and x.dtype == y.dtype, key
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=key)
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0)))
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)
    return worst


# --- (a) within one profile, (c) the level x thread matrix ----------------------------------

# Rows: graph_optimization disable_all / basic / extended / all; columns: intra_op_threads
# 1 2 4. Equal letters mean bit-identical outputs (all outputs of the model), letters in
# order of first appearance. Measured on this machine (see the module docstring); if onnxruntime
# or the CPU changes, the failure message prints the measured matrix.
ALL_SAME = "AAA AAA AAA AAA"
EXPECTED_MATRIX = {
    "mlp": ALL_SAME,
    "mlp_big": ALL_SAME,  # fan-in <= 256 everywhere: the Gemm fusion does not change bits
    "mlp_wide": "AAA BBB BBB BBB",
    "cnn": "AAA AAA AAA BBB",
    "attention": "AAA AAA BBB BBB",
    "linear_regression": ALL_SAME,
    "logistic_regression": ALL_SAME,
    "random_forest": "ABC ABC ABC ABC",
    "gradient_boosting": "ABC ABC ABC ABC",
    "mlp_classifier": ALL_SAME,
    "mlp_regressor": ALL_SAME,
}


def measure_matrix(name: str) -> tuple[str, dict[tuple[OptimizationLevel, int], float]]:
    """The matrix pattern and the max abs difference of each cell from disable_all/1 thread.
    Also checks (a): a second run and a fresh session of each profile give the same bits."""
    _, feeds = all_models()[name]
    letters: dict[bytes, str] = {}
    rows, diffs = [], {}
    reference: dict[str, Array] | None = None
    for level in LEVELS:
        row = ""
        for threads in THREADS:
            first = executor(name, level, threads)
            out = first.run(feeds)
            digest = first.output_hash(out)
            assert first.output_hash(first.run(feeds)) == digest, (name, level, threads, "rerun")
            fresh = executor(name, level, threads)
            assert fresh.output_hash(fresh.run(feeds)) == digest, (name, level, threads, "fresh")
            reference = reference or out
            diffs[level, threads] = _differences(out, reference)
            row += letters.setdefault(digest, "ABCDEFGHIJKL"[len(letters)])
        rows.append(row)
    return " ".join(rows), diffs


@pytest.mark.parametrize("name", MODELS)
def test_level_thread_matrix(name: str) -> None:
    pattern, diffs = measure_matrix(name)
    table = "\n".join(
        f"  {level:<12}" + "  ".join(f"{diffs[level, t]:.1e}" for t in THREADS) for level in LEVELS
    )
    assert pattern == EXPECTED_MATRIX[name], (
        f"{name}: measured matrix {pattern!r}, expected {EXPECTED_MATRIX[name]!r}; max abs diff "
        f"from disable_all/1 thread (threads 1 2 4):\n{table}"
    )
    # Where bits differ, only by float32 rounding (a few ulps), never by more.
    assert max(diffs.values()) < 1e-5


@pytest.mark.parametrize("name", list(HAND_BUILT))
def test_disable_all_is_thread_invariant(name: str) -> None:
    _, feeds = all_models()[name]
    hashes = set()
    for threads in THREADS:
        session = executor(name, "disable_all", threads)
        hashes.add(session.output_hash(session.run(feeds)))
    assert len(hashes) == 1


# --- tree ensembles -------------------------------------------------------------------------


def test_tree_ensemble_labels_flip_with_threads_at_ties() -> None:
    """A random forest of 10 trees averages votes in multiples of 1/10, so two classes often
    tie exactly; the order in which threads add the votes decides the tie. On 5000 seeded
    random rows: labels flip between 1 and 2 (or 4) threads, only at rows that tie."""
    model = skm.to_onnx(skm.random_forest(), skm.classification_data()[0], classifier=True)
    x = (np.random.default_rng(skm.SEED).standard_normal((5000, skm.FEATURES)) * 2).astype(
        np.float32
    )
    runs = {}
    for threads in THREADS:
        session = OnnxExecutor(
            model.SerializeToString(), profile=ExecutionProfile(intra_op_threads=threads)
        )
        runs[threads] = session.run({"X": x})
        # Same thread count, same bits.
        assert session.output_hash(session.run({"X": x})) == session.output_hash(runs[threads])
    base = runs[1]
    top2 = np.sort(base["probabilities"], axis=1)[:, -2:]
    ties = np.abs(top2[:, 1] - top2[:, 0]) <= 1e-6
    flips = {}
    for threads in (2, 4):
        flipped = runs[threads]["label"] != base["label"]
        flips[threads] = int(flipped.sum())
        assert np.all(ties[flipped]), "a label flipped where no two classes tie"
        np.testing.assert_allclose(runs[threads]["probabilities"], base["probabilities"], atol=1e-6)
        assert not np.array_equal(runs[threads]["probabilities"], base["probabilities"])
    assert flips[2] + flips[4] > 0, f"no label flipped ({flips}): onnxruntime changed?"


# --- processes ------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from verinet.hub.files import file_cid
    from verinet.runtime.executor import OnnxExecutor
    from tests.runtime.test_determinism import HAND_BUILT

    folder = Path(sys.argv[1])
    report = {"hashes": {}, "cids": {}}
    for model_file in sorted(folder.glob("*.onnx")):
        name = model_file.stem
        executor = OnnxExecutor(model_file.read_bytes())
        with np.load(folder / f"{name}.npz") as data:
            feeds = {key: data[key] for key in data.files}
        report["hashes"][name] = executor.output_hash(executor.run(feeds)).hex()
    for name, build in HAND_BUILT.items():  # the seeded builders, run in this process
        report["cids"][name] = file_cid(build().SerializeToString())
    print(json.dumps(report))
    """
)


def test_same_hashes_in_a_fresh_process(tmp_path: Path) -> None:
    """One child process hashes every model (same files, same inputs, default profile) and
    rebuilds the hand-built models; hashes and CIDs must equal this process's."""
    expected = {}
    for name, (model, feeds) in all_models().items():
        (tmp_path / f"{name}.onnx").write_bytes(model)
        np.savez(tmp_path / f"{name}.npz", **feeds)  # type: ignore[arg-type]
        session = OnnxExecutor(model)
        expected[name] = session.output_hash(session.run(feeds)).hex()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(child.stdout)
    assert report["hashes"] == expected
    assert report["cids"] == {name: file_cid(all_models()[name][0]) for name in HAND_BUILT}


# --- batches --------------------------------------------------------------------------------


def _rows_one_by_one(session: OnnxExecutor, feeds: Feeds) -> dict[str, Array]:
    [(name, x)] = feeds.items()
    runs = [session.run({name: x[i : i + 1]}) for i in range(len(x))]
    return {key: np.concatenate([run[key] for run in runs]) for key in runs[0]}


# The ai.onnx.ml linear kernels (LinearRegressor, LinearClassifier) compute a batch of 1 (and,
# for LinearClassifier, of 2) with other bits than larger batches: a row's outputs depend on the
# batch it came in (by float32 rounding only; labels agree). Honest nodes serving such a model
# must be given the same batch. Every other model here is batch-invariant.
BATCH_DEPENDENT = {"linear_regression", "logistic_regression"}


@pytest.mark.parametrize("name", MODELS)
def test_batch_rows_versus_single_rows(name: str) -> None:
    """Under the default profile (disable_all, 1 thread): is row i of a batch bit-identical to
    running row i alone? Yes for every model but `BATCH_DEPENDENT`."""
    _, feeds = all_models()[name]
    session = executor(name)
    batch, rows = session.run(feeds), _rows_one_by_one(session, feeds)
    identical = session.output_hash(batch) == session.output_hash(rows)
    assert identical == (name not in BATCH_DEPENDENT)
    _differences(batch, rows)  # labels equal, floats within rounding


def test_tree_ensemble_batch_differs_from_rows_with_threads() -> None:
    """With 2 threads a tree ensemble splits a 200-row batch differently from single rows, so a
    row's probabilities depend on the batch it came in: such a model must keep one thread
    (or honest nodes must be given the same batch)."""
    _, feeds = all_models()["random_forest"]
    session = executor("random_forest", threads=2)
    batch, rows = session.run(feeds), _rows_one_by_one(session, feeds)
    assert session.output_hash(batch) != session.output_hash(rows)
    np.testing.assert_array_equal(batch["label"], rows["label"])
    np.testing.assert_allclose(batch["probabilities"], rows["probabilities"], atol=1e-6)


# --- traced == untraced, one-step re-execution ----------------------------------------------


def assert_trace_consistent(session: OnnxExecutor, feeds: Feeds) -> None:
    out = session.run(feeds)
    trace = session.run_traced(feeds)
    assert session.output_hash(trace.outputs) == session.output_hash(out)
    assert trace.output_hash == session.output_hash(out)
    for key in out:
        np.testing.assert_array_equal(trace.outputs[key], out[key])
    assert trace.ops == len(session.model.graph.node)
    for index in range(1, trace.ops + 1):
        values = session.execute_op(index, trace.step_inputs(index))
        assert group_hash(list(values.items())) == trace.op_hashes[index - 1], (
            f"op {index} ({trace.step(index).op_type}) re-executed alone differs from the trace"
        )


@pytest.mark.parametrize("name", MODELS)
def test_traced_equals_untraced_and_every_op_replays(name: str) -> None:
    _, feeds = all_models()[name]
    assert_trace_consistent(executor(name), feeds)


# --- edge cases: float16 chains, empty batches -----------------------------------------------


def _fp16_chain() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Mul", ["x", "x"], ["square"], name="square"),
        helper.make_node("Mul", ["square", "x"], ["y"], name="cube"),
    ]
    graph = helper.make_graph(
        nodes,
        "fp16_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def test_float16_chain_does_not_replay_so_tracing_is_refused() -> None:
    # onnxruntime's CPU provider has no float16 Mul: it casts to float32 around such ops even
    # under disable_all and drops the Cast pair between two of them, so op 2 reads the
    # unrounded square while a trace would commit the rounded one. Replaying op 2 from the
    # float16 square gives other bits than the full run's output.
    x = np.random.default_rng(0).standard_normal(64).astype(np.float16)
    model = _fp16_chain()
    session = OnnxExecutor(model.SerializeToString())
    full = session.run({"x": x})["y"]
    square = session.execute_op(1, {"x": x})["square"]
    replayed = session.execute_op(2, {"square": square, "x": x})["y"]
    assert replayed.tobytes() != full.tobytes()
    # So Verinet refuses to trace it, and a manifest may not offer it in optimistic mode.
    with pytest.raises(UnsupportedSignature, match="float16"):
        session.run_traced({"x": x})
    with pytest.raises(UnsupportedSignature, match="Drop 'optimistic'"):
        draft_manifest(model.SerializeToString(), name="fp16", fee=0, license="MIT")
    signed = draft_manifest(
        model.SerializeToString(), name="fp16", fee=0, license="MIT", modes=("signed", "quorum")
    )
    assert OnnxExecutor(model.SerializeToString(), signed).run({"x": x})["y"].tobytes() == (
        full.tobytes()
    )


def test_empty_batch_hashes() -> None:
    session = executor("mlp")
    out = session.run({"x": np.zeros((0, 16), np.float32)})
    assert out["y"].shape == (0, 4)
    assert session.output_hash(out) != session.output_hash(
        session.run({"x": np.zeros((1, 16), np.float32)})
    )
    trace = session.run_traced({"x": np.zeros((0, 16), np.float32)})
    assert trace.output_hash == session.output_hash(out)
