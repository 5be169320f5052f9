"""The main job: `verinet demo` runs the tour end to end and reports every scenario."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from verinet.devnet.tour import open_chain, run_tour


def test_demo_cli_prints_every_scenario_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "verinet.cli.main", "demo", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout)
    outcomes = {row["scenario"]: row["outcome"] for row in result["jobs"]}
    assert outcomes == {
        "honest node": "PAID",
        "all honest": "PAID",
        "one liar": "PAID",
        "no majority": "REFUNDED",
        "one no-show": "PAID",
    }
    audit = result["audit"]
    assert audit["market_balance"] == audit["open_escrow"] + audit["owed"]
    assert audit["registry_balance"] == audit["bonded"]


@pytest.mark.integration
def test_tour_on_anvil() -> None:
    with open_chain("anvil") as chain:
        result = run_tour(chain, "anvil")
    assert [r.outcome for r in result.rows] == ["PAID", "PAID", "PAID", "REFUNDED", "PAID"]
    assert result.rows[0].check == "receipt verified"
