"""The `verinet` command line: thin commands over the client SDK, the node and the devnet."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from verinet import __version__
from verinet.cli.connect import DEFAULT_DEVNET_DIR, Network, load_network
from verinet.errors import VerinetError

app = typer.Typer(
    name="verinet",
    help="Verinet: verified AI inference on an open network of staked nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
devnet_app = typer.Typer(help="A local network: chain, contracts, nodes, sample models.")
model_app = typer.Typer(help="Published models: list, show, publish.")
job_app = typer.Typer(help="Jobs on the market.")
node_app = typer.Typer(help="Run and manage a node: keys, registration, stake, serving.")
app.add_typer(devnet_app, name="devnet")
app.add_typer(model_app, name="model")
app.add_typer(job_app, name="job")
app.add_typer(node_app, name="node")
console = Console()
err = Console(stderr=True)

DevnetDir = Annotated[
    Path, typer.Option("--devnet", help="devnet directory (its devnet.json says how to connect)")
]
RpcUrl = Annotated[str | None, typer.Option(help="JSON-RPC URL (instead of a devnet)")]
ContractsFile = Annotated[
    Path | None, typer.Option("--contracts", help="JSON file: contract name → address")
]
Keystore = Annotated[Path | None, typer.Option(help="encrypted keystore to sign with")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


@contextmanager
def _errors() -> Iterator[None]:
    """Verinet errors end the command with their message and exit code 1, not a traceback."""
    try:
        yield
    except VerinetError as exc:
        err.print(f"[red]{type(exc).__name__}[/]: {exc}")
        raise typer.Exit(1) from None


def _client(net: Network) -> Any:
    from verinet.client import Client
    from verinet.hub.store import DiskStore

    if net.hub is None:
        return Client.connect(net.rpc_url, net.contracts, net.account)
    # On a devnet, inputs over a node's body limit go by CID through the devnet's hub.
    folder, url = net.hub
    return Client.connect(
        net.rpc_url, net.contracts, net.account, blob_store=DiskStore(folder), blob_url=url
    )


@app.command()
def version() -> None:
    """Print Verinet's version."""
    console.print(f"verinet {__version__}")


# -- devnet ------------------------------------------------------------------------------


@devnet_app.command("up")
def devnet_up(
    nodes: Annotated[int, typer.Option(min=1, max=16, help="number of nodes")] = 4,
    chain: Annotated[
        str, typer.Option(help="embedded (in-process EVM) or anvil (nodes as processes)")
    ] = "embedded",
    directory: Annotated[Path, typer.Option("--dir", help="where state goes")] = DEFAULT_DEVNET_DIR,
    zk: Annotated[
        bool, typer.Option(help="also publish mlp-zk: zk mode with a local test SRS (~2 s)")
    ] = False,
) -> None:
    """Start a local network with sample models and run it until interrupted (Ctrl-C)."""
    from verinet.devnet.network import Devnet
    from verinet.node.daemon import configure_logging

    configure_logging("console", "info")  # node logs go to stderr
    if (directory / "devnet.json").exists():
        (directory / "devnet.json").unlink()  # a stale description from an earlier run
    with _errors(), console.status("starting") as status:
        net = Devnet.start(directory, chain=chain, nodes=nodes, progress=status.update, zk=zk)  # type: ignore[arg-type]
    if zk:
        console.print(
            "[yellow]mlp-zk's SRS was generated on this machine: FOR TESTING ONLY (whoever "
            "made it can forge proofs). Try: verinet infer mlp-zk --example --mode zk[/]"
        )
    try:
        _print_devnet(net.describe(), directory)
        stop = Path(directory / "devnet.json")
        while stop.exists():
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        net.stop()
        (directory / "devnet.json").unlink(missing_ok=True)


def _print_devnet(d: dict[str, Any], directory: Path) -> None:
    console.print(
        f"[bold]Verinet {__version__} devnet[/] on the [bold]{d['chain']}[/] chain "
        f"(id {d['chain_id']}) at {d['rpc_url']}"
    )
    table = Table(title="Nodes")
    table.add_column("node")
    table.add_column("endpoint")
    for n in d["nodes"]:
        table.add_row(n["address"], n["url"])
    console.print(table)
    models = Table(title="Sample models")
    models.add_column("id", justify="right")
    models.add_column("name")
    for name, model_id in d["models"].items():
        models.add_row(str(model_id), name)
    console.print(models)
    console.print(f"Model hub: {d['hub_url']}   Description: {directory / 'devnet.json'}")
    console.print("[yellow]Development keys only: never send them real value.[/]")
    console.print(
        "Try, in another shell:\n"
        "  verinet model list\n"
        "  verinet infer mlp --example\n"
        "  verinet infer trees --example --mode quorum -k 3\n"
        "  verinet job show 1\n"
        f"  curl {d['nodes'][0]['url']}/healthz\n"
        "Ctrl-C stops the network."
    )


# -- models ------------------------------------------------------------------------------


@model_app.command("list")
def model_list(
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
    as_json: AsJson = False,
) -> None:
    """Published models with owner, fee and modes."""
    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts)
        infos = _client(net).models()
    rows = [
        {
            "id": m.model_id,
            "owner": m.owner,
            "fee": m.fee,
            "modes": str(m.modes.name or "").lower().replace("|", ","),
            "version": m.version,
            "deprecated": m.deprecated,
        }
        for m in infos
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Models")
    for col in ("id", "owner", "fee", "modes", "version", "deprecated"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)


@model_app.command("show")
def model_show(
    model: Annotated[str, typer.Argument(help="model id (or a devnet sample's name)")],
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
) -> None:
    """A model's registry entry and its manifest (fetched from a node, checked by CID)."""
    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts)
        client = _client(net)
        model_id = net.model_id(model)
        info = client.deployment.models.model(model_id)
        manifest = client.manifest(model_id)
    print(
        json.dumps(
            {
                "id": model_id,
                "owner": info.owner,
                "fee": info.fee,
                "manifest": json.loads(manifest.canonical()),
            },
            indent=2,
        )
    )


@model_app.command("publish")
def model_publish(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the .onnx file")],
    name: Annotated[str, typer.Option(help="model name")],
    fee: Annotated[int, typer.Option(help="fee per execution, in wei of VNET")] = 10**18,
    modes: Annotated[
        str, typer.Option(help="comma-separated: signed,quorum,optimistic,zk")
    ] = "signed,quorum",
    license: Annotated[str, typer.Option(help="SPDX license of the weights")] = "Apache-2.0",
    store: Annotated[
        Path | None, typer.Option(help="blob store nodes replicate from (default: devnet hub)")
    ] = None,
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
    keystore: Keystore = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            help="zk: an input (.json or .npy) that fixes the circuit's shapes and scales"
        ),
    ] = None,
    srs: Annotated[
        Path | None, typer.Option(help="zk: the KZG SRS file of a public ceremony")
    ] = None,
    zk_max_bytes: Annotated[int, typer.Option(help="zk: largest model file to prove")] = 1 << 20,
) -> None:
    """Check an ONNX model, store it where nodes fetch it, and register it on-chain. With zk
    among the modes, also build its circuit and EVM verifier and register the verifier."""
    from verinet.hub.publish import draft_manifest
    from verinet.hub.store import DiskStore

    chosen = tuple(modes.split(","))
    if "zk" in chosen:
        with _errors():
            net = load_network(
                devnet, rpc_url=rpc_url, contracts_file=contracts, keystore=keystore, as_owner=True
            )
            _publish_zk(
                path, name, fee, chosen, license, sample, srs, zk_max_bytes, store, devnet, net
            )
        return

    with _errors():
        net = load_network(
            devnet, rpc_url=rpc_url, contracts_file=contracts, keystore=keystore, as_owner=True
        )
        data = path.read_bytes()
        manifest = draft_manifest(
            data, name=name, fee=fee, license=license, modes=tuple(modes.split(","))
        )
        target = DiskStore(store or devnet / "hub")
        with console.status("publishing"):
            published = _client(net).publish_model(data, manifest, store=target)
    console.print(
        f"published [bold]{name}[/] as model {published.model_id}: model "
        f"{published.model_cid}, manifest {published.manifest_cid} "
        f"(tx {published.receipt.tx_hash})"
    )


def _publish_zk(
    path: Path,
    name: str,
    fee: int,
    modes: tuple[str, ...],
    license: str,
    sample: Path | None,
    srs: Path | None,
    max_bytes: int,
    store: Path | None,
    devnet: Path,
    net: Network,
) -> None:
    from verinet.cli.zk import publish_with_zk
    from verinet.hub.publish import draft_manifest
    from verinet.hub.store import DiskStore

    if sample is None:
        raise typer.BadParameter("zk mode needs --sample FILE: an input that fixes the circuit")
    data = path.read_bytes()
    others = tuple(m for m in modes if m != "zk") or ("signed",)
    manifest = draft_manifest(data, name=name, fee=fee, license=license, modes=others)
    inputs = _read_inputs(sample, False, name, manifest)
    published = publish_with_zk(
        _client(net),
        data,
        manifest,
        inputs,
        store=DiskStore(store or devnet / "hub"),
        srs=srs,
        max_bytes=max_bytes,
        out=console,
    )
    console.print(
        f"published [bold]{name}[/] as model {published.model_id} with zk mode: manifest "
        f"{published.published.manifest_cid}, verifier {published.verifier} "
        f"(tx {published.published.receipt.tx_hash})"
    )


# -- inference and jobs ------------------------------------------------------------------


def _read_inputs(path: Path | None, example: bool, model_name: str, manifest: Any) -> Any:
    if example:
        from verinet.devnet.samples import sample_models

        for sample in sample_models():
            if sample.manifest.model == manifest.model:
                return dict(sample.example)
        raise typer.BadParameter(f"model {model_name} is not a sample; give --input")
    if path is None:
        raise typer.BadParameter("give --input FILE (.json or .npy) or --example")
    if path.suffix == ".npy":
        if len(manifest.inputs) != 1:
            raise typer.BadParameter(".npy works for single-input models; use JSON")
        return {manifest.inputs[0].name: np.load(path, allow_pickle=False)}
    from verinet.runtime.wire import group_from_json

    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise typer.BadParameter('the JSON must be an object: {"input name": [...]}')
    specs = {s.name: s for s in manifest.inputs}
    wrapped = {
        name: value
        if isinstance(value, dict)
        else {
            "dtype": specs[name].dtype if name in specs else "float32",
            "shape": list(np.shape(value)),
            "data": value,
        }
        for name, value in raw.items()
    }
    return group_from_json(wrapped, max_bytes=manifest.input_policy.max_bytes)


@app.command()
def infer(
    model: Annotated[str, typer.Argument(help="model id (or a devnet sample's name)")],
    input_path: Annotated[
        Path | None, typer.Option("--input", help=".json ({name: nested list}) or .npy")
    ] = None,
    example: Annotated[bool, typer.Option(help="use the sample model's example input")] = False,
    mode: Annotated[str, typer.Option(help="signed, quorum, optimistic or zk")] = "signed",
    k: Annotated[int, typer.Option("-k", help="quorum size")] = 3,
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
    keystore: Keystore = None,
    as_json: AsJson = False,
) -> None:
    """Ask the network for a verified inference and print outputs and evidence."""
    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts, keystore=keystore)
        client = _client(net)
        model_id = net.model_id(model)
        inputs = _read_inputs(input_path, example, model, client.manifest(model_id))
        if as_json:
            result = client.infer(model_id, inputs, mode=mode, k=k)
        else:
            with console.status("requesting") as status:

                def say(line: str) -> None:  # warnings stay on screen; steps replace each other
                    if line.startswith("WARNING"):
                        console.print(f"[yellow]{line}[/]")
                    status.update(line)

                result = client.infer(model_id, inputs, mode=mode, k=k, progress=say)
    if as_json:
        print(json.dumps(_result_json(result), indent=2))
        return
    _print_result(result)


def _result_json(result: Any) -> dict[str, Any]:
    return {
        "job_id": result.job_id,
        "model_id": result.model_id,
        "mode": result.mode,
        "k": result.k,
        "state": result.state.name,
        "input_hash": "0x" + result.input_hash.hex(),
        "output_hash": "0x" + result.output_hash.hex(),
        "outputs": {n: np.asarray(a).tolist() for n, a in result.outputs.items()},
        "nodes": list(result.nodes),
        "transactions": result.transactions,
        "verdict": list(result.verdict.checks) if result.verdict else None,
        "elapsed_s": round(result.elapsed, 3),
    }


def _print_result(result: Any) -> None:
    table = Table(title=f"Job {result.job_id}: model {result.model_id}, {result.mode}")
    table.add_column("output")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("values")
    for name, array in result.outputs.items():
        array = np.asarray(array)
        text = np.array2string(array.reshape(-1)[:8], precision=4, separator=", ")
        table.add_row(name, str(array.dtype), str(list(array.shape)), text)
    console.print(table)
    for check in result.verdict.checks if result.verdict else ():
        console.print(f"[green]✓[/] {check}")
    console.print(f"output hash 0x{result.output_hash.hex()}  ({result.elapsed:.2f} s)")


@job_app.command("show")
def job_show(
    job_id: int,
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
) -> None:
    """A job's on-chain record: state, seats, hashes, deadlines."""
    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts)
        client = _client(net)
        job = client.job(job_id)
        seats = client.deployment.market.seats_of(job_id)
    data = dataclasses.asdict(job)
    data = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in data.items()}
    data["mode"], data["state"], data["seat_holders"] = job.mode.name, job.state.name, seats
    print(json.dumps(data, indent=2, default=str))


@job_app.command("finalize")
def job_finalize(
    job_id: int,
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
    keystore: Keystore = None,
) -> None:
    """End a job past its deadline (anyone may): PAID to a majority or REFUNDED to its
    requester. Prints the job's state and the transaction, if this call sent one."""
    from verinet.client._escrow import finalize
    from verinet.types import JobId

    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts, keystore=keystore)
        job, tx = finalize(_client(net), JobId(job_id))
    print(json.dumps({"job_id": job_id, "state": job.state.name, "finalize_tx": tx}, indent=2))


# -- node --------------------------------------------------------------------------------


@node_app.command("run")
def node_run(
    config: Annotated[Path | None, typer.Option(help="TOML config file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="state directory")] = None,
    port: Annotated[int | None, typer.Option(help="API port (0: any free)")] = None,
    keystore: Keystore = None,
    exit_with_parent: Annotated[
        bool,
        typer.Option(
            "--exit-with-parent", help="also stop when the process that started this one exits"
        ),
    ] = False,
) -> None:
    """Run a node: serve its API and take jobs until SIGINT/SIGTERM."""
    from verinet.chain.deploy import Deployment
    from verinet.chain.jsonrpc import JsonRpcChain
    from verinet.node.config import NodeSettings
    from verinet.node.daemon import configure_logging, run_until_signalled
    from verinet.node.keys import load_keystore
    from verinet.node.service import Node
    from verinet.types import Address

    with _errors():
        settings = NodeSettings.load(config, data_dir=data_dir, port=port, keystore=keystore)
        configure_logging(settings.log_format, settings.log_level)
        if settings.keystore is None or settings.chain.url is None:
            raise typer.BadParameter("the config must name a keystore and chain.url")
        account = load_keystore(settings.keystore)
        chain = JsonRpcChain(settings.chain.url, [account])
        contracts = {k: Address(v) for k, v in settings.chain.contracts.items()}
        node = Node(settings, account, Deployment.at(chain, contracts))
        with _byte_bars(err) as progress:  # the first sync may download models
            node.sync_models(progress)
        run_until_signalled(
            node,
            ready=lambda url: err.print(f"node {account.address} on {url}"),
            exit_with_parent=exit_with_parent,
        )


@contextmanager
def _byte_bars(out: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A byte-counting progress bar per label: `update(label, done, total)`."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, transient=True) as bars:
        tasks: dict[str, TaskID] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(f"downloading {label}", total=total)
            bars.update(tasks[label], completed=done, total=total)

        yield update


@node_app.command("init")
def node_init(
    keystore: Annotated[Path, typer.Option(help="where to write the encrypted key")],
) -> None:
    """Create a new node key in an encrypted keystore (password from $VERINET_KEYSTORE_PASSWORD
    or a prompt)."""
    import os

    from verinet.node.keys import PASSWORD_ENV, create_keystore

    password = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "keystore password", hide_input=True, confirmation_prompt=True
    )
    with _errors():
        account = create_keystore(keystore, password)
    console.print(f"created {keystore} for {account.address}")


@node_app.command("register")
def node_register(
    endpoint: Annotated[str, typer.Option(help="public URL of this node's API")],
    keystore: Keystore = None,
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
) -> None:
    """Register this node's endpoint in NodeRegistry."""
    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts, keystore=keystore)
        tx = _client(net).deployment.nodes.register(endpoint, sender=net.account.address)
    console.print(f"registered {net.account.address} at {endpoint} (tx {tx.tx_hash})")


@node_app.command("stake")
def node_stake(
    amount: Annotated[float, typer.Argument(help="VNET to stake")],
    serve: Annotated[str, typer.Option(help="comma-separated model ids to serve")] = "",
    keystore: Keystore = None,
    devnet: DevnetDir = DEFAULT_DEVNET_DIR,
    rpc_url: RpcUrl = None,
    contracts: ContractsFile = None,
) -> None:
    """Approve and stake VNET (and optionally register the models this node serves)."""
    with _errors():
        net = load_network(devnet, rpc_url=rpc_url, contracts_file=contracts, keystore=keystore)
        d = _client(net).deployment
        wei = int(amount * 10**18)
        d.token.approve(d.nodes.address, wei, sender=net.account.address)
        tx = d.nodes.stake(wei, sender=net.account.address)
        if serve:
            d.nodes.set_serving(
                [int(m) for m in serve.split(",")], True, sender=net.account.address
            )
    console.print(f"staked {amount:g} VNET from {net.account.address} (tx {tx.tx_hash})")


# -- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    chain: Annotated[
        str, typer.Option(help="embedded (in-process EVM, no setup) or anvil (node processes)")
    ] = "embedded",
    as_json: AsJson = False,
) -> None:
    """Start a devnet, run every mode on every sample model through the SDK, print what was
    verified, audit the escrow, and exit."""
    from verinet.devnet.demo import run_demo
    from verinet.node.daemon import configure_logging

    # The embedded devnet's nodes run in this process: their logs go to stderr, and only
    # warnings, so stdout carries the table (or the JSON) alone.
    configure_logging(level="warning")
    started = time.perf_counter()
    with _errors(), tempfile.TemporaryDirectory(prefix="verinet-demo-") as tmp:
        if as_json:
            result = run_demo(Path(tmp), chain=chain)
        else:
            with console.status("starting") as status:
                result = run_demo(Path(tmp), chain=chain, progress=status.update)
    elapsed = time.perf_counter() - started
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(
        f"[bold]Verinet {__version__}[/] demo on the [bold]{chain}[/] chain, "
        f"{result['nodes']} nodes"
    )
    table = Table(title="Verified inference")
    for col in ("job", "model", "mode", "outcome", "verification", "nodes", "seconds"):
        table.add_column(col, justify="right" if col in ("job", "seconds", "nodes") else "left")
    for r in result["jobs"]:
        colour = "green" if r["verified"] else "red"
        table.add_row(
            str(r["job_id"]),
            r["model"],
            r["mode"],
            r["outcome"],
            f"[{colour}]{r['verification']}[/]",
            str(r["nodes"]),
            f"{r['seconds']:.2f}",
        )
    console.print(table)
    a = result["audit"]
    console.print(
        f"Escrow audit: market holds {a['market_balance']:,} = open escrow {a['open_escrow']:,}"
        f" + owed {a['owed']:,}; registry holds {a['registry_balance']:,} = bonded"
        f" {a['bonded']:,}; jobs {result['job_states']}. [green]Nothing lost.[/]"
    )
    _print_dispute(result["dispute"])
    console.print(f"Done in {elapsed:.1f} s. Next: ./dev run (a devnet that stays up).")
    dispute = result["dispute"]
    caught = dispute["outcome"] == "REFUNDED" and dispute["slashed"] > 0
    if not all(r["verified"] for r in result["jobs"]) or not caught:
        raise typer.Exit(1)


def _print_dispute(d: dict[str, Any]) -> None:
    token = 10**18
    caught = d["outcome"] == "REFUNDED" and d["slashed"] > 0
    colour = "green" if caught else "red"
    console.print(
        f"Staged dispute (optimistic job {d['job_id']}, {d['ops']} ops): node "
        f"{d['cheater'][:10]}… claimed a wrong output. {d['games']} watcher(s) challenged; "
        f"bisection to step {d['step']} in at most {d['rounds']} rounds; {d['jurors']} juror(s) "
        f"voted, {d['votes_for_challenger']} against the claim. [{colour}]Job "
        f"{d['outcome']}, cheater slashed {d['slashed'] / token:g} tokens[/], the first "
        f"challenger won {d['challenger_reward'] / token:g} on a bond of {d['bond'] / token:g}; "
        f"{d['protocol_seconds']} s of chain time."
    )


@app.command()
def tour(
    chain: Annotated[str, typer.Option(help="embedded or anvil")] = "embedded",
    as_json: AsJson = False,
) -> None:
    """The protocol's scenarios driven by hand (liar, no majority, no-show), no node daemons."""
    from verinet.devnet.tour import open_chain, run_tour

    with open_chain(chain) as c:
        result = run_tour(c, chain)
    rows = [dataclasses.asdict(r) for r in result.rows]
    if as_json:
        print(json.dumps({"chain": chain, "jobs": rows, "audit": result.audit}, indent=2))
        return
    table = Table(title="Protocol scenarios")
    for col in ("job", "scenario", "mode", "outcome", "verification", "txs", "gas"):
        table.add_column(col)
    for r in result.rows:
        table.add_row(
            str(r.job_id), r.scenario, r.mode, r.outcome, r.check, str(r.transactions), f"{r.gas:,}"
        )
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
