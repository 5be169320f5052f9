"""The executor benchmark runs (tiny parameters) and writes the figures it promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_executor_smoke(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_executor", ROOT / "benchmarks" / "bench_executor.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    out = tmp_path / "x.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    models = results["models"]
    assert set(models) == {"tiny MLP", "~1 ms MLP", "small CNN"}
    for m in models.values():
        assert set(m["times"]) == {"raw", "untraced", "hashed", "traced", "hash"}
        assert all(t["median_us"] > 0 and t["p90_us"] > 0 for t in m["times"].values())
        assert len(m["ratios"]) == 5
        assert all(r > 0 for r in m["ratios"].values())
    assert isinstance(results["goal"]["met"], bool)
