"""The node benchmark runs (tiny parameters) and writes the figures it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVERS = {"plain", "plain_to_thread", "node", "node_thread"}


@pytest.mark.integration
def test_bench_node_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_node.py"), "--quick", "--json", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["onnxruntime"]

    mlp = results["http"]["models"]["mlp"]
    assert set(mlp["servers"]) == SERVERS
    for cells in mlp["servers"].values():
        assert set(cells) == {"1", "8", "32"}
        for cell in cells.values():
            assert cell["requests"] > 0
            assert cell["rps"] > 0 and cell["p50_ms"] > 0 and cell["p99_ms"] >= cell["p50_ms"]
            assert cell["server_app_us"] > 0 and cell["server_call_us"] > 0
    assert set(mlp["ratios"]) == {f"{k}/plain" for k in SERVERS - {"plain"}}
    assert all(r > 0 for ratios in mlp["ratios"].values() for r in ratios.values())
    breakdown = results["http"]["breakdown"]["mlp"]
    assert all(us > 0 for us in breakdown["node_us"].values())
    assert set(breakdown["handler_total_us"]) == {
        "plain",
        "node",
        "node, lone",
        "node_thread",
    }

    e2e = results["e2e"]
    for mode in ("signed", "quorum(3)"):
        figures = e2e["modes"][mode]
        assert figures["runs"] == 1 and figures["median_s"] > 0 and figures["p90_s"] > 0
    assert e2e["quorum/signed"] > 0
    assert {g["met"] for g in results["goals"].values()} <= {True, False}
    assert set(results["goals"]) == {
        "http node mlp",
        "e2e quorum(3)/signed",
    }
