"""Small scikit-learn models, trained on seeded synthetic data and converted with skl2onnx.

Everything is fixed by `SEED`, so two calls give the same data and (trained in one process with
the same libraries) the same models. Classifiers are converted with ``zipmap=False``: their
outputs are a ``label`` tensor (int64) and a ``probabilities`` tensor (float32), both of which
Verinet carries and hashes. Models are saved with IR version 10 (onnxruntime 1.31 loads <= 13).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

SEED = 0
SAMPLES = 200
FEATURES = 8
CLASSES = 3
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}
IR_VERSION = 10

Float32 = npt.NDArray[np.float32]


def classification_data() -> tuple[Float32, npt.NDArray[np.int64]]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=SAMPLES,
        n_features=FEATURES,
        n_informative=5,
        n_classes=CLASSES,
        random_state=SEED,
    )
    return x.astype(np.float32), y.astype(np.int64)


def regression_data() -> tuple[Float32, Float32]:
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=SAMPLES, n_features=FEATURES, noise=0.1, random_state=SEED)
    return x.astype(np.float32), y.astype(np.float32)


def to_onnx(model: Any, x: Float32, *, classifier: bool) -> onnx.ModelProto:
    """skl2onnx conversion with tensor-only outputs and an IR version onnxruntime loads."""
    import skl2onnx

    options = {id(model): {"zipmap": False}} if classifier else None
    proto: onnx.ModelProto = skl2onnx.to_onnx(
        model, x[:1], target_opset=TARGET_OPSET, options=options
    )
    proto.ir_version = IR_VERSION
    return proto


def random_forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    x, y = classification_data()
    return RandomForestClassifier(n_estimators=10, max_depth=6, random_state=SEED).fit(x, y)


def sklearn_models() -> dict[str, tuple[onnx.ModelProto, Float32]]:
    """name -> (converted model, the float32 feature matrix it was trained on)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    xc, yc = classification_data()
    xr, yr = regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a few iterations are enough here
        fitted: dict[str, tuple[Any, Float32, bool]] = {
            "linear_regression": (LinearRegression().fit(xr, yr), xr, False),
            "logistic_regression": (LogisticRegression(max_iter=500).fit(xc, yc), xc, True),
            "random_forest": (random_forest(), xc, True),
            "gradient_boosting": (
                GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=SEED).fit(
                    xc, yc
                ),
                xc,
                True,
            ),
            "mlp_classifier": (
                MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=SEED).fit(
                    xc, yc
                ),
                xc,
                True,
            ),
            "mlp_regressor": (
                MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=SEED).fit(xr, yr),
                xr,
                False,
            ),
        }
    return {
        name: (to_onnx(model, x, classifier=classifier), x)
        for name, (model, x, classifier) in fitted.items()
    }
