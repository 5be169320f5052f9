"""`verinet demo`: a devnet, every mode on every sample model through the SDK, an audit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verinet.client import Client
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.network import Devnet
from verinet.devnet.samples import sample_models
from verinet.errors import VerinetError

MODES: tuple[tuple[str, int], ...] = (("signed", 1), ("quorum", 3))
"""Modes built so far, with the k each runs at."""


def run_demo(
    data_dir: Path, *, chain: str = "embedded", progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = progress or (lambda _: None)
    rows: list[dict[str, Any]] = []
    with Devnet.start(data_dir, chain=chain, progress=say) as net:  # type: ignore[arg-type]
        client = Client(net.deployment, net.clients[0])
        try:
            for sample in sample_models():
                model_id = net.models[sample.name]
                for mode, k in MODES:
                    say(f"{sample.name}: {mode}")
                    started = time.monotonic()
                    row: dict[str, Any] = {"model": sample.name, "mode": f"{mode}({k})"}
                    try:
                        result = client.infer(
                            model_id,
                            sample.example,
                            mode=mode,  # type: ignore[arg-type]
                            k=k,
                            progress=_prefixed(say, sample.name),
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
            totals = audit(net.deployment)
            states = audit_jobs(net.deployment, now=net.chain.timestamp())
        finally:
            client.close()
        return {
            "chain": chain,
            "nodes": len(net.nodes),
            "contracts": net.deployment.addresses(),
            "jobs": rows,
            "audit": totals,
            "job_states": states,
        }


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    def inner(message: str) -> None:
        say(f"{prefix}: {message}")

    return inner
