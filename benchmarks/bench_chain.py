"""Gas per job and transactions per second, on the embedded EVM and on anvil.

Gas: every transaction of a job is counted (request -> commits -> reveals -> finalize,
request -> submit_quorum with k receipts, or request -> receipt -> finalize) for `signed`
and `quorum(k)` with k = 3 and 5, by commit and reveal and by receipts. The
baseline, measured in the same run on the same chain, is one ERC-20 transfer of the
protocol token; gas is also reported as a multiple of it.

Throughput: transactions per second for a stream of whole signed jobs, against the
baseline of a stream of ERC-20 transfers on the same backend (one sequential sender,
each transaction mined before the next, as a client waiting for receipts would).

    python benchmarks/bench_chain.py                   # both backends, table + JSON
    python benchmarks/bench_chain.py --quick           # CI smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

from verinet.chain import Chain, EmbeddedChain, dev_accounts
from verinet.devnet.bootstrap import Network, bootstrap
from verinet.devnet.jobs import JobRun, run_quorum, run_quorum_receipts, run_signed
from verinet.types import Address, Hash32, Wei

NODES = 6
CLIENTS = 2


def _h(label: str) -> Hash32:
    return Hash32(keccak(text=label))


@contextmanager
def open_backend(name: str) -> Iterator[Chain]:
    accounts = 3 + NODES + CLIENTS
    if name == "embedded":
        yield EmbeddedChain(accounts=accounts)
        return
    from verinet.chain.anvil import AnvilProcess
    from verinet.chain.jsonrpc import JsonRpcChain

    with AnvilProcess.start() as anvil:
        chain = JsonRpcChain(anvil.url, dev=True)
        for account in dev_accounts(accounts):
            chain.add_account(account)
        yield chain


def _transfer_gas(net: Network) -> int:
    client = net.clients[0]
    receipt = net.deployment.token.transfer(
        Address(net.clients[1].address), Wei(1), sender=Address(client.address)
    )
    return receipt.gas_used


def _by_step(run: JobRun) -> dict[str, int]:
    steps: dict[str, int] = {}
    for name, receipt in run.transactions:
        steps[name] = steps.get(name, 0) + receipt.gas_used
    return steps


def measure_gas(net: Network, repeats: int) -> dict[str, Any]:
    client = net.clients[0]
    flows: dict[str, Callable[[int], JobRun]] = {
        "signed": lambda i: run_signed(net, client, _h(f"in s{i}"), _h("out")),
        "quorum(3)": lambda i: run_quorum(net, client, _h(f"in q3 {i}"), 3, lambda _: _h("out")),
        "quorum(5)": lambda i: run_quorum(net, client, _h(f"in q5 {i}"), 5, lambda _: _h("out")),
        "quorum(3) receipts": lambda i: run_quorum_receipts(
            net, client, _h(f"in r3 {i}"), 3, lambda _: _h("out")
        ),
        "quorum(5) receipts": lambda i: run_quorum_receipts(
            net, client, _h(f"in r5 {i}"), 5, lambda _: _h("out")
        ),
    }
    baseline = _transfer_gas(net)
    out: dict[str, Any] = {"erc20_transfer_gas": baseline, "jobs": {}}
    for name, flow in flows.items():
        runs = [flow(i) for i in range(repeats)]
        gas = [r.gas for r in runs]
        out["jobs"][name] = {
            "transactions": len(runs[-1].transactions),
            "gas_per_job": int(statistics.median(gas)),
            "per_step": _by_step(runs[-1]),
            "x_transfer": round(statistics.median(gas) / baseline, 1),
        }
    return out


def measure_throughput(net: Network, count: int) -> dict[str, Any]:
    client, other = net.clients[0], net.clients[1]
    token = net.deployment.token
    started = time.perf_counter()
    for _ in range(count):
        token.transfer(Address(other.address), Wei(1), sender=Address(client.address))
    transfer_tps = count / (time.perf_counter() - started)

    jobs = max(1, count // 3)
    started = time.perf_counter()
    txs = sum(
        len(run_signed(net, client, _h(f"tps {i}"), _h("o")).transactions) for i in range(jobs)
    )
    elapsed = time.perf_counter() - started
    job_tps = txs / elapsed
    return {
        "erc20_transfer_tx_per_s": round(transfer_tps, 1),
        "signed_job_tx_per_s": round(job_tps, 1),
        "signed_jobs_per_s": round(jobs / elapsed, 1),
        "job_tx_vs_transfer_tx": round(job_tps / transfer_tps, 2),
    }


def run(backends: list[str], repeats: int, tx_count: int) -> dict[str, Any]:
    results: dict[str, Any] = {"params": {"repeats": repeats, "tx_count": tx_count}, "backends": {}}
    for backend in backends:
        with open_backend(backend) as chain:
            net = bootstrap(chain, nodes=NODES, clients=CLIENTS)
            results["backends"][backend] = {
                "gas": measure_gas(net, repeats),
                "throughput": measure_throughput(net, tx_count),
            }
    return results


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    gas = Table(title="Gas per job (all transactions counted)")
    for col in ("backend", "mode", "txs", "gas/job", "x ERC-20 transfer", "per step"):
        gas.add_column(col)
    for backend, r in results["backends"].items():
        for mode, g in r["gas"]["jobs"].items():
            steps = ", ".join(f"{k} {v:,}" for k, v in g["per_step"].items())
            gas.add_row(
                backend,
                mode,
                str(g["transactions"]),
                f"{g['gas_per_job']:,}",
                str(g["x_transfer"]),
                steps,
            )
    console.print(gas)
    tps = Table(title="Throughput (one sequential sender, each tx mined before the next)")
    for col in (
        "backend",
        "ERC-20 transfer tx/s",
        "signed-job tx/s (with its view calls)",
        "jobs/s",
        "job tx / transfer tx",
    ):
        tps.add_column(col)
    for backend, r in results["backends"].items():
        t = r["throughput"]
        tps.add_row(
            backend,
            str(t["erc20_transfer_tx_per_s"]),
            str(t["signed_job_tx_per_s"]),
            str(t["signed_jobs_per_s"]),
            str(t["job_tx_vs_transfer_tx"]),
        )
    console.print(tps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["embedded", "anvil", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5, help="jobs per mode for the gas figures")
    parser.add_argument(
        "--tx", type=int, default=300, help="transactions for the throughput figures"
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_chain.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.tx = 1, 6
    backends = ["embedded", "anvil"] if args.backend == "both" else [args.backend]
    results = run(backends, args.repeats, args.tx)
    print_tables(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
