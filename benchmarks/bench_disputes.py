"""Dispute gas and rounds against op count, and audit detection against p.

Disputes: an optimistic claim of N ops (N = 10, 100, 1000) whose op m is wrong is
challenged by an honest node; the game is played to the end (bisection, the one-step
reveal, a three-member committee's vote) and every transaction's gas is counted. The
baseline, measured in the same run on the same chain, is the same optimistic job left
unchallenged (request, claim, finalize); the table gives the dispute as a multiple of it.
The wrong op is placed where the bisection takes its most rounds, ceil(log2(N + 1)).

Audits: a node that cheats on n signed jobs is caught when the audit draws at least one
of them. Each job is submitted on-chain and drawn by the contract (the hash of its
receipt's block); the measured rate over many trials is set against 1 - (1 - p)^n.

    python benchmarks/bench_disputes.py                # embedded EVM (and anvil: --anvil)
    python benchmarks/bench_disputes.py --quick        # CI smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

from verinet.chain import Chain, EmbeddedChain, dev_accounts
from verinet.devnet.bootstrap import Network, bootstrap, placeholder_cid
from verinet.devnet.disputes import challenge, past_deadline, play, run_optimistic, synthetic_trace
from verinet.devnet.jobs import drawn_nodes, sign_for
from verinet.protocol.dispute import rounds as max_rounds
from verinet.protocol.types import BPS, GameOutcome, Mode
from verinet.types import Address, Hash32

NODES = 6
CLIENTS = 2


def _h(label: str) -> Hash32:
    return Hash32(keccak(text=label))


def _open(anvil: bool) -> tuple[Chain, Any]:
    accounts = 3 + NODES + CLIENTS
    if not anvil:
        return EmbeddedChain(accounts=accounts), None
    from verinet.chain.anvil import AnvilProcess
    from verinet.chain.jsonrpc import JsonRpcChain

    process = AnvilProcess.start()
    anvil_ctx = process.__enter__()
    chain = JsonRpcChain(anvil_ctx.url, dev=True)
    for account in dev_accounts(accounts):
        chain.add_account(account)
    return chain, process


def _worst_step(ops: int) -> int:
    """A step whose bisection takes the most rounds (the last op's output, step N)."""
    return ops


def dispute_row(net: Network, ops: int) -> dict[str, Any]:
    d = net.deployment
    cid = placeholder_cid("sample model")
    truth = synthetic_trace(cid, _h(f"in {ops}"), ops)
    client = net.clients[0]
    # Baseline: the same job, unchallenged.
    base, _ = run_optimistic(net, client, truth)
    past_deadline(net, d.market.job(base.job_id).finalize_after)
    base.transactions.append(
        ("finalize", d.market.finalize(base.job_id, sender=Address(client.address)))
    )
    baseline = sum(r.gas_used for _, r in base.transactions)

    lie = truth.with_op(_worst_step(ops), _h("wrong"))
    run, cheat = run_optimistic(net, client, lie)
    honest = next(n for n in net.nodes if n.address != cheat.address)
    game_id, opened = challenge(net, run.job_id, honest)
    jurors = [n for n in net.nodes if n.address not in (cheat.address, honest.address)]
    played = play(
        net,
        game_id,
        defender=lie,
        challenger=truth,
        judge=lambda step, step_hash: truth.step_hash(step) == step_hash,
        jurors=jurors,
    )
    assert d.disputes.game(game_id).outcome is GameOutcome.CHALLENGER
    by_kind: dict[str, int] = {"challenge": opened.gas_used}
    for name, receipt in played.transactions:
        by_kind[name] = by_kind.get(name, 0) + receipt.gas_used
    total = sum(by_kind.values())
    return {
        "ops": ops,
        "rounds": played.rounds,
        "max_rounds": max_rounds(ops),
        "step": played.step,
        "gas": by_kind,
        "dispute_gas": total,
        "baseline_job_gas": baseline,
        "ratio": round(total / baseline, 2),
        "per_round_gas": round(
            (by_kind.get("bisect", 0) + by_kind.get("respond", 0)) / max(1, played.rounds)
        ),
    }


def audit_rows(net: Network, ps: list[int], ns: list[int], trials: int) -> list[dict[str, Any]]:
    """Detection of a node cheating on n signed jobs, drawn by the contract at p."""
    d = net.deployment
    owner = Address(net.deployer.address)
    client = net.clients[1]
    rows = []
    for p in ps:
        d.params.set_audit(p, BPS, sender=owner)  # margin 1x: p is the floor here
        draws: list[bool] = []
        for t in range(trials * max(ns)):
            job_id, _ = d.market.request(
                net.model_id, _h(f"audit {p} {t}"), Mode.SIGNED, 1, sender=Address(client.address)
            )
            (node,) = drawn_nodes(net, job_id, 1)
            d.market.submit_receipt(
                sign_for(net, node, job_id, _h(f"audit {p} {t}"), _h("wrong")),
                sender=Address(client.address),
            )
            net.chain.advance_time(0)
            claim = d.market.claim_of(job_id)
            assert claim.audit_bps == p, claim.audit_bps
            draws.append(claim.audited)
        rate = sum(draws) / len(draws)
        sigma = math.sqrt(p / BPS * (1 - p / BPS) / len(draws))
        for n in ns:
            caught = sum(any(draws[i * n : (i + 1) * n]) for i in range(trials))
            expected = 1 - (1 - p / BPS) ** n
            rows.append(
                {
                    "p": p / BPS,
                    "n": n,
                    "trials": trials,
                    "detected": round(caught / trials, 3),
                    "expected": round(expected, 3),
                    "single_job_rate": round(rate, 4),
                    "jobs": len(draws),
                    # the per-job rate's distance from p in binomial standard deviations
                    "z": round((rate - p / BPS) / sigma, 2),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--anvil", action="store_true", help="measure gas on anvil too")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--trials", type=int, default=100, help="audit trials per (p, n)")
    args = parser.parse_args(argv)
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    ps, ns, trials = (
        ([1000], [1, 5], 20) if args.quick else ([500, 1000, 2000], [1, 5, 10], args.trials)
    )
    results: dict[str, Any] = {}
    for backend in ["embedded", "anvil"] if args.anvil else ["embedded"]:
        chain, process = _open(backend == "anvil")
        try:
            net = bootstrap(chain, nodes=NODES, clients=CLIENTS)
            rows = [dispute_row(net, ops) for ops in sizes]
            results[f"disputes_{backend}"] = rows
            print(f"\nDispute gas on {backend} (baseline: the same optimistic job unchallenged)")
            print(
                f"{'ops':>6} {'rounds':>6} {'max':>4} {'dispute gas':>12} {'job gas':>9} "
                f"{'ratio':>6} {'gas/round':>9}"
            )
            for r in rows:
                print(
                    f"{r['ops']:>6} {r['rounds']:>6} {r['max_rounds']:>4} {r['dispute_gas']:>12,} "
                    f"{r['baseline_job_gas']:>9,} {r['ratio']:>6} {r['per_round_gas']:>9,}"
                )
            if backend == "embedded":
                audits = audit_rows(net, ps, ns, trials)
                results["audits"] = audits
                print("\nAudit detection: a node cheating on n signed jobs, drawn on-chain at p")
                print(
                    f"{'p':>5} {'n':>3} {'trials':>6} {'detected':>9} {'1-(1-p)^n':>10} "
                    f"{'per job':>8} {'jobs':>5} {'z':>5}"
                )
                for a in audits:
                    print(
                        f"{a['p']:>5} {a['n']:>3} {a['trials']:>6} {a['detected']:>9} "
                        f"{a['expected']:>10} {a['single_job_rate']:>8} {a['jobs']:>5} {a['z']:>5}"
                    )
        finally:
            if process is not None:
                process.__exit__(None, None, None)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
