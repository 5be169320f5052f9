"""The main jobs: `verinet demo` runs every sample model in every mode through real nodes on an
embedded devnet; `verinet tour` drives the protocol's scenarios by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from verinet.devnet.demo import MODES
from verinet.devnet.tour import open_chain, run_tour


def verinet_json(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "verinet", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)  # stdout is the JSON alone: node logs go to stderr


def test_demo_verifies_every_model_in_every_mode_through_nodes() -> None:
    result = verinet_json("demo")

    assert result["chain"] == "embedded" and result["nodes"] == 4
    rows = result["jobs"]
    assert [(r["model"], r["mode"]) for r in rows] == [
        (name, f"{mode}({k})") for name in ("mlp", "trees", "cnn") for mode, k in MODES
    ] + [("mlp-zk", "zk(1)")]
    assert {("signed", 1), ("quorum", 3), ("optimistic", 1)} <= set(MODES)
    # A signed job the audit drew comes back SUBMITTED (held for the audit window, then
    # paid), and an optimistic one always does (held for its challenge window).
    held = [r for r in rows if r["outcome"] == "SUBMITTED"]
    assert all(r["mode"].startswith(("signed", "optimistic")) for r in held), held
    assert {r["model"] for r in held if r["mode"].startswith("optimistic")} == {
        "mlp",
        "trees",
        "cnn",
    }
    for row in rows:
        assert row["verified"] and row["outcome"] in ("PAID", "SUBMITTED"), row
        if row["mode"].startswith("signed"):
            assert row["nodes"] == 1
            assert row["verification"].startswith("EIP-712 receipt signed by")
        elif row["mode"].startswith("optimistic"):
            assert row["nodes"] == 1
            assert row["verification"].startswith("claimed by")
        elif row["mode"].startswith("zk"):
            assert row["outcome"] == "PAID" and row["nodes"] == 1
            assert row["verification"].startswith("ezkl proof")
            assert "FOR TESTING ONLY" in row["verification"]
        else:
            assert row["nodes"] == 3
            assert row["verification"] == (
                "3 of 3 EIP-712 receipts agree, settled in one transaction (majority 2)"
            )
    # The staged dispute: the wrong claim was refuted, refunded and its node slashed.
    dispute = result["dispute"]
    assert dispute["outcome"] == "REFUNDED" and dispute["slashed"] > 0
    assert dispute["refuted_by"] >= 1 and dispute["step"] == dispute["ops"] + 1
    assert dispute["votes_for_challenger"] >= 1
    # Both modes of one model settle on one result: same inputs, same bits.
    by_model: dict[str, set[str]] = {}
    for row in rows:
        by_model.setdefault(row["model"], set()).add(row["output_hash"])
    assert all(len(hashes) == 1 for hashes in by_model.values()), by_model
    assert len({row["job_id"] for row in rows}) == len(rows)
    # A held job may have been paid meanwhile (its node finalizes once the hold ends).
    states = result["job_states"]
    assert set(states) <= {"PAID", "SUBMITTED"} and sum(states.values()) == len(rows)
    assert states.get("SUBMITTED", 0) <= len(held)
    audit = result["audit"]
    assert (audit["open_escrow"] == 0) == ("SUBMITTED" not in states)
    assert audit["market_balance"] == audit["open_escrow"] + audit["owed"]
    assert audit["registry_balance"] == audit["bonded"] > 0


def test_tour_cli_prints_every_scenario_as_json() -> None:
    result = verinet_json("tour")

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
