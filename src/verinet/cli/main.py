"""The `verinet` command line: thin commands over the devnet and (later) the client SDK."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verinet import __version__

app = typer.Typer(
    name="verinet",
    help="Verinet: verified AI inference on an open network of staked nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()


@app.command()
def version() -> None:
    """Print Verinet's version."""
    console.print(f"verinet {__version__}")


@app.command()
def demo(
    chain: Annotated[
        str, typer.Option(help="embedded (in-process EVM, no setup) or anvil (local JSON-RPC node)")
    ] = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
) -> None:
    """Run a scripted tour: deploy, stake, publish, run every mode, audit the escrow."""
    from verinet.devnet.tour import open_chain, run_tour

    started = time.perf_counter()
    with open_chain(chain) as c:
        if as_json:
            result = run_tour(c, chain)
        else:
            with console.status("starting") as status:
                result = run_tour(c, chain, step=lambda msg: status.update(msg))
    elapsed = time.perf_counter() - started

    if as_json:
        print(
            json.dumps(
                {
                    "chain": result.chain,
                    "contracts": result.network.deployment.addresses(),
                    "jobs": [dataclasses.asdict(r) for r in result.rows],
                    "audit": result.audit,
                },
                indent=2,
            )
        )
        return

    d = result.network.deployment
    console.print(f"[bold]Verinet {__version__}[/] on the [bold]{chain}[/] chain (id {c.chain_id})")
    contracts = Table(title="Contracts", show_header=True)
    contracts.add_column("contract")
    contracts.add_column("address")
    for name, address in d.addresses().items():
        contracts.add_row(name, address)
    console.print(contracts)

    jobs = Table(title="Jobs")
    for col in ("job", "scenario", "mode", "outcome", "verification", "txs", "gas"):
        jobs.add_column(col, justify="right" if col in ("job", "txs", "gas") else "left")
    for r in result.rows:
        colour = "green" if r.outcome == "PAID" else "yellow"
        jobs.add_row(
            str(r.job_id),
            r.scenario,
            r.mode,
            f"[{colour}]{r.outcome}[/]",
            r.check,
            str(r.transactions),
            f"{r.gas:,}",
        )
    console.print(jobs)
    a = result.audit
    console.print(
        f"Escrow audit: market holds {a['market_balance']:,} = open escrow {a['open_escrow']:,}"
        f" + owed {a['owed']:,}; registry holds {a['registry_balance']:,} = bonded"
        f" {a['bonded']:,}. [green]Nothing lost.[/]"
    )
    console.print(
        f"Done in {elapsed:.1f} s. Next: ./dev test (the test suite), ./dev bench (gas and tx/s)."
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
