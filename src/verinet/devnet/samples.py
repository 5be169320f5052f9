"""The devnet's sample models: real models built here, with manifests, ready to publish.

Three models, each built from a seed so that every machine gets the same file, the same CID
and the same manifest (with the library versions of ``requirements.lock``):

- ``mlp``: the seeded 16 → 32 → 4 MLP of `verinet.devnet.models`;
- ``trees``: a scikit-learn random forest trained on a seeded synthetic dataset and converted
  by skl2onnx to one ``TreeEnsembleClassifier`` op;
- ``cnn``: the seeded small CNN of `verinet.devnet.models`.

Building takes scikit-learn and skl2onnx, which are imported on first use (about 2 s, nearly
all of it the imports); the files are then kept for the life of the process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import onnx

from verinet.chain.deploy import Deployment
from verinet.devnet import models
from verinet.hub.manifest import ExecutionProfile, ModelManifest
from verinet.hub.publish import Published, draft_manifest, publish
from verinet.hub.store import BlobStore
from verinet.runtime.tensors import Array
from verinet.types import Address

if TYPE_CHECKING:
    from verinet.verification.zk_hub import ZkPublished

SEED: Final = 0
LICENSE: Final = "Apache-2.0"
DEFAULT_FEE: Final = 10**18
ALL_MODES: Final = ("signed", "quorum", "optimistic")

TREES_FEATURES: Final = 8
TREES_CLASSES: Final = 3
TREES_ROWS: Final = 300
TREES_ESTIMATORS: Final = 20
TREES_DEPTH: Final = 3
_TREES_OPSET: Final = {"": models.OPSET, "ai.onnx.ml": 3}

# Tree ensembles add their trees' votes in an order that depends on the thread count, which
# changes probabilities and, at ties, labels (tests/runtime/test_determinism.py). One thread
# each, named here rather than left to the default, so the reason stays next to the model.
TREES_PROFILE: Final = ExecutionProfile(intra_op_threads=1, inter_op_threads=1)


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: == on numpy arrays is elementwise
class SampleModel:
    """A sample model: its file, its manifest and an input it accepts.

    The arrays in `example` are read-only: built samples are shared within the process.
    """

    name: str
    description: str
    model_bytes: bytes
    manifest: ModelManifest
    example: dict[str, Array]


@dataclass(frozen=True, slots=True)
class _Built:
    name: str
    description: str
    model_bytes: bytes
    example: tuple[tuple[str, Array], ...]
    modes: tuple[str, ...]
    profile: ExecutionProfile


def _frozen(array: Array) -> Array:
    array.setflags(write=False)
    return array


def _normal(shape: tuple[int, ...], seed: int) -> Array:
    return _frozen(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def trees_dataset() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The seeded synthetic classification data the ``trees`` sample is trained on.

    Features are cast to float32 before training: that is what the ONNX model is fed, and the
    cast absorbs last-bit differences that BLAS kernels may leave in the float64 data.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=TREES_ROWS,
        n_features=TREES_FEATURES,
        n_informative=5,
        n_classes=TREES_CLASSES,
        random_state=SEED,
    )
    return x.astype(np.float32), y.astype(np.int64)


def train_forest() -> Any:
    """The ``trees`` sample's scikit-learn ``RandomForestClassifier``, freshly trained.

    A random forest rather than gradient boosting: its leaves are class frequencies and its
    splits midpoints of float32 features (no exp or log on the way), so training gives the
    same numbers on every CPU.
    """
    from sklearn.ensemble import RandomForestClassifier

    x, y = trees_dataset()
    forest = RandomForestClassifier(
        n_estimators=TREES_ESTIMATORS, max_depth=TREES_DEPTH, random_state=SEED
    )
    return forest.fit(x, y)


def trees_model(forest: Any = None) -> onnx.ModelProto:
    """`forest` (by default `train_forest()`) as ONNX: ``features[batch, 8]`` →
    ``label[batch]`` (int64), ``probabilities[batch, 3]`` (float32)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    forest = train_forest() if forest is None else forest
    model: onnx.ModelProto = to_onnx(
        forest,
        initial_types=[("features", FloatTensorType([None, TREES_FEATURES]))],
        target_opset=_TREES_OPSET,
        # Plain tensors out: ZipMap would return a sequence of maps, which Verinet refuses.
        options={id(forest): {"zipmap": False}},
    )
    model.ir_version = models.IR_VERSION
    # skl2onnx 1.20 lists the default domain twice; keep one entry per domain.
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    # skl2onnx leaves the batch axis anonymous; one name ties it across input and outputs.
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.name = "trees"
    onnx.checker.check_model(model)
    return model


def _build_mlp() -> _Built:
    return _Built(
        name="mlp",
        description=(
            "A 16 → 32 → 4 multilayer perceptron (MatMul, Add, Relu; float32) with seeded "
            "random weights: x[batch, 16] → y[batch, 4] logits."
        ),
        model_bytes=models.mlp((16, 32, 4), seed=SEED).SerializeToString(),
        example=(("x", _normal((1, 16), seed=SEED)),),
        modes=ALL_MODES,
        profile=ExecutionProfile(),
    )


def _build_trees() -> _Built:
    features, _ = trees_dataset()
    return _Built(
        name="trees",
        description=(
            f"A scikit-learn random forest ({TREES_ESTIMATORS} trees, depth {TREES_DEPTH}) "
            f"trained on seeded synthetic data, converted by skl2onnx: "
            f"features[batch, {TREES_FEATURES}] → label[batch] (int64), "
            f"probabilities[batch, {TREES_CLASSES}]. Run with one thread: the sum of tree "
            "votes depends on the thread count."
        ),
        model_bytes=trees_model().SerializeToString(),
        example=(("features", _frozen(features[:1].copy())),),
        modes=ALL_MODES,
        profile=TREES_PROFILE,
    )


def _build_cnn() -> _Built:
    return _Built(
        name="cnn",
        description=(
            "A small CNN (two Conv-Relu-MaxPool blocks, global average pool, Gemm; float32) "
            "with seeded random weights: image[batch, 3, 32, 32] → logits[batch, 10]."
        ),
        model_bytes=models.cnn(seed=SEED).SerializeToString(),
        example=(("image", _normal((1, 3, 32, 32), seed=SEED)),),
        modes=ALL_MODES,
        profile=ExecutionProfile(),
    )


@cache
def _built() -> tuple[_Built, ...]:
    return (_build_mlp(), _build_trees(), _build_cnn())


def sample_models(fee: int = DEFAULT_FEE) -> tuple[SampleModel, ...]:
    """The devnet's sample models (``mlp``, ``trees``, ``cnn``), each with a manifest asking
    `fee` per job under the Apache-2.0 license. Files are built once per process."""
    return tuple(
        SampleModel(
            name=built.name,
            description=built.description,
            model_bytes=built.model_bytes,
            manifest=draft_manifest(
                built.model_bytes,
                name=built.name,
                fee=fee,
                license=LICENSE,
                modes=built.modes,
                profile=built.profile,
                description=built.description,
            ),
            example=dict(built.example),
        )
        for built in _built()
    )


def publish_samples(
    deployment: Deployment,
    store: BlobStore,
    owner: Address,
    samples: Sequence[SampleModel] | None = None,
) -> dict[str, Published]:
    """Store each sample's file and manifest in `store` and register it in the deployment's
    ModelRegistry, owned by `owner` (by default all of `sample_models()`), keyed by name."""
    chosen = sample_models() if samples is None else samples
    names = [sample.name for sample in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"sample names must be distinct: {names}")
    return {
        sample.name: publish(
            sample.model_bytes,
            sample.manifest,
            store=store,
            registry=deployment.models,
            sender=owner,
        )
        for sample in chosen
    }


ZK_SAMPLE: Final = "mlp-zk"
"""The ``mlp`` sample published once more with zk mode: the same file, its own model id."""


def publish_zk_sample(
    deployment: Deployment,
    store: BlobStore,
    owner: Address,
    *,
    work_dir: Path | None = None,
    srs_path: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ZkPublished:
    """Build the ``mlp`` sample's circuit (calibrated on its example), store it in `store` and
    publish the model as `ZK_SAMPLE` with signed and zk modes, its verifier deployed and named.

    Without `srs_path` the SRS is generated here, FOR TESTING ONLY: a devnet's proofs prove
    nothing to anyone but the devnet's own machine (`verinet.verification.zk`).
    """
    from verinet.verification.zk_hub import publish_zk

    mlp = next(sample for sample in sample_models() if sample.name == "mlp")
    manifest = draft_manifest(
        mlp.model_bytes,
        name=ZK_SAMPLE,
        fee=DEFAULT_FEE,
        license=LICENSE,
        modes=("signed",),
        description=mlp.description + " Published with zk mode (ezkl, a local test SRS).",
    )
    return publish_zk(
        mlp.model_bytes,
        manifest,
        mlp.example,
        store=store,
        registry=deployment.models,
        sender=owner,
        work_dir=work_dir,
        srs_path=srs_path,
        progress=progress,
    )
