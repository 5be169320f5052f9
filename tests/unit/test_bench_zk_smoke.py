"""The zk benchmark runs (smallest model, one rep) and writes the figures it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_zk_smoke(tmp_path: Path) -> None:
    # A process of its own: the benchmark points ezkl's per-process cache at its scratch folder.
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_zk.py"), "--quick", "--json", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    results = json.loads(out.read_text())
    (model,) = results["models"].values()
    assert model["decomposition"] == [128, 4]  # 2**9 rows instead of ezkl's default 2**15
    assert all(t > 0 for t in model["median_s"].values())
    assert set(model["ratios"]) == {"setup verinet/raw", "prove verinet/raw", "verify verinet/raw"}
    assert all(r > 0 for r in model["ratios"].values())
    assert model["sizes"]["verifier_runtime_bytes"] <= 24_576
    assert 200_000 < model["verify_gas_embedded"] < 1_500_000
    assert isinstance(results["goal"]["met"], bool)
