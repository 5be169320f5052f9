"""The benchmarks run (tiny parameters) and write the figures they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_bench_chain_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_chain.py"), "--quick", "--out", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    results = json.loads(out.read_text())
    for backend in ("embedded", "anvil"):
        r = results["backends"][backend]
        jobs = r["gas"]["jobs"]
        assert set(jobs) == {
            "signed",
            "quorum(3)",
            "quorum(5)",
            "quorum(3) receipts",
            "quorum(5) receipts",
        }
        # request + commits + reveals + finalize are all counted.
        assert jobs["quorum(3)"]["transactions"] == 8
        assert jobs["quorum(5)"]["transactions"] == 12
        assert jobs["signed"]["gas_per_job"] < jobs["quorum(3)"]["gas_per_job"]
        assert jobs["quorum(3)"]["gas_per_job"] < jobs["quorum(5)"]["gas_per_job"]
        for k in (3, 5):  # one submit_quorum costs less than k commits, k reveals, finalize
            fast = jobs[f"quorum({k}) receipts"]
            assert fast["transactions"] == 2
            assert fast["gas_per_job"] < jobs[f"quorum({k})"]["gas_per_job"]
        assert r["throughput"]["erc20_transfer_tx_per_s"] > 0


def test_bench_disputes_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_disputes.py"),
            "--quick",
            "--json",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    results = json.loads(out.read_text())
    rows = results["disputes_embedded"]
    assert [r["ops"] for r in rows] == [10, 100]
    for r in rows:
        # The wrong op is put where bisection takes its most rounds, ceil(log2(N + 1)).
        assert r["rounds"] == r["max_rounds"] and r["step"] == r["ops"]
        assert r["gas"]["vote"] > 0 and r["gas"]["reveal_step"] > 0
        assert r["dispute_gas"] > 0 and r["baseline_job_gas"] > 0
    assert rows[0]["dispute_gas"] < rows[1]["dispute_gas"]  # more rounds, more gas
    for a in results["audits"]:
        assert 0 <= a["detected"] <= 1 and a["expected"] == round(1 - (1 - a["p"]) ** a["n"], 3)
