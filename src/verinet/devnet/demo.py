"""`verinet demo`: a devnet, every mode on every sample model through the SDK (zk on the mlp
published with a circuit), an audit, and a staged dispute."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verinet.client import Client
from verinet.devnet.arena import Arena
from verinet.devnet.audit import at_one_block, audit, audit_jobs
from verinet.devnet.liveness import assert_none_overdue
from verinet.devnet.network import Devnet
from verinet.devnet.personas import WrongOutput
from verinet.devnet.samples import ZK_SAMPLE, sample_models
from verinet.errors import VerinetError
from verinet.node.service import Node
from verinet.protocol.dispute import rounds
from verinet.protocol.types import GameOutcome, Mode

MODES: tuple[tuple[str, int], ...] = (("signed", 1), ("quorum", 3), ("optimistic", 1))
"""Modes built so far, with the k each runs at."""


def run_demo(
    data_dir: Path, *, chain: str = "embedded", progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = progress or (lambda _: None)
    rows: list[dict[str, Any]] = []
    with Devnet.start(data_dir, chain=chain, progress=say, zk=True) as net:  # type: ignore[arg-type]
        client = Client(net.deployment, net.clients[0])
        samples = sample_models()
        runs = [(s.name, s.example, mode, k) for s in samples for mode, k in MODES]
        mlp = next(s for s in samples if s.name == "mlp")
        runs.append((ZK_SAMPLE, mlp.example, "zk", 1))  # the mlp again, published with zk
        try:
            for name, example, mode, k in runs:
                model_id = net.models[name]
                say(f"{name}: {mode}")
                started = time.monotonic()
                row: dict[str, Any] = {"model": name, "mode": f"{mode}({k})"}
                try:
                    result = client.infer(
                        model_id,
                        example,
                        mode=mode,  # type: ignore[arg-type]
                        k=k,
                        progress=_prefixed(say, name),
                    )
                except VerinetError as exc:
                    row.update(
                        job_id=None,
                        outcome=type(exc).__name__,
                        verification=str(exc)[:80],
                        verified=False,
                        nodes=0,
                    )
                else:
                    assert result.verdict is not None
                    row.update(
                        job_id=result.job_id,
                        outcome=result.state.name,
                        verification=result.verdict.summary,
                        verified=True,
                        nodes=len(result.nodes),
                        output_hash="0x" + result.output_hash.hex(),
                    )
                row["seconds"] = time.monotonic() - started
                rows.append(row)
            say("auditing the escrow")
            now = net.chain.timestamp()
            # Both at one block: a held job paid between two audits would make them disagree.
            totals, states = at_one_block(
                net.deployment, lambda view: (audit(view), audit_jobs(view, now=now))
            )
            say("checking that no escrow is left past its deadline")
            assert_none_overdue(net.deployment, wait=30.0)
        finally:
            client.close()
        say("staging a dispute: a node claims a wrong result")
        dispute = staged_dispute(data_dir / "dispute")
        return {
            "chain": chain,
            "nodes": len(net.nodes),
            "contracts": net.deployment.addresses(),
            "jobs": rows,
            "audit": totals,
            "job_states": states,
            "dispute": dispute,
        }


def staged_dispute(folder: Path) -> dict[str, Any]:
    """One optimistic job answered wrong on purpose, in an arena (embedded chain) of one
    `WrongOutput` node and four honest watchers: how it was caught and what it cost."""
    with Arena.open(folder, [WrongOutput, Node, Node, Node, Node]) as arena:
        cheater = arena.nodes[0]
        job_id = arena.request(Mode.OPTIMISTIC, claimant=cheater)
        claimed_at = arena.chain.timestamp()
        arena.run([job_id])
        d = arena.deployment
        claim = d.market.claim_of(job_id)
        games = [g for g in arena.games() if g.job_id == job_id]
        won = [g for g in games if g.outcome is GameOutcome.CHALLENGER]
        resolved = {e.args["game_id"]: e.args for e in d.disputes.history("GameResolved")}
        # Several watchers may win games over the job; the one that refuted it first was paid.
        first = max(won or games, key=lambda g: resolved[g.game_id]["winner_amount"])
        votes = [
            (d.disputes.ballot(first.game_id, voter), voter)
            for voter in d.disputes.voters_of(first.game_id)
        ]
        audit(d)
        audit_jobs(d, now=arena.chain.timestamp())
        return {
            "job_id": job_id,
            "cheater": cheater.address,
            "ops": claim.ops,
            "games": len(games),
            "refuted_by": len(won),
            "step": first.hi,
            "rounds": rounds(claim.ops),
            "votes_for_challenger": sum(1 for ballot, _ in votes if ballot == 2),
            "jurors": len(votes),
            "outcome": d.market.job(job_id).state.name,
            "slashed": int(arena.penalties()[cheater.address]),
            "challenger_reward": int(resolved[first.game_id]["winner_amount"]),
            "bond": int(first.bond),
            "protocol_seconds": arena.chain.timestamp() - claimed_at,
        }


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    def inner(message: str) -> None:
        say(f"{prefix}: {message}")

    return inner
