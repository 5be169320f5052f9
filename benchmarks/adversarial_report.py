"""The adversarial campaigns as a report: per persona, what it cheated on, how much of it was
caught, what it cost, and how many honest runs ended in a false slash.

Each campaign is one persona among four honest watchers in an arena (embedded EVM, the real
node code, HTTP on loopback): `--jobs` optimistic jobs answered by the persona and as many by
the honest nodes. The tests in tests/adversarial assert the same things; this prints them.

    python benchmarks/adversarial_report.py              # 8 + 8 jobs per persona
    python benchmarks/adversarial_report.py --jobs 2 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import structlog

from verinet.devnet.arena import run_campaign
from verinet.devnet.personas import PERSONAS
from verinet.protocol.types import GameOutcome, JobState

TOKEN = 10**18


def campaign_row(name: str, jobs: int, folder: Path) -> dict[str, Any]:
    campaign = run_campaign(folder, PERSONAS[name], jobs)
    with campaign.arena as arena:
        market = arena.deployment.market
        cheater = campaign.cheater.address
        wrong = [
            j
            for j in campaign.cheated
            if market.claim_of(j).output_hash != campaign.honest_nodes[0].record(j).output_hash
        ]
        games = arena.games()
        return {
            "persona": name,
            "wrong_claims": len(wrong),
            "refunded": sum(market.job(j).state is JobState.REFUNDED for j in wrong),
            "games": len(games),
            "games_lost_by_persona": sum(
                (g.defender == cheater and g.outcome is GameOutcome.CHALLENGER)
                or (g.challenger == cheater and g.outcome is GameOutcome.DEFENDER)
                for g in games
            ),
            "slashed_tokens": arena.penalties()[cheater] / TOKEN,
            "honest_jobs_paid": sum(market.job(j).state is JobState.PAID for j in campaign.honest),
            "honest_runs": campaign.honest_runs(),
            "false_slashes": campaign.false_slashes(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per side per persona")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rows = []
    for name in PERSONAS:
        with tempfile.TemporaryDirectory(prefix="verinet-adversarial-") as tmp:
            rows.append(campaign_row(name, args.jobs, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    honest = sum(r["honest_runs"] for r in rows)
    false = sum(r["false_slashes"] for r in rows)
    print(f"\nhonest runs: {honest}; false slashes: {false}")


if __name__ == "__main__":
    main()
