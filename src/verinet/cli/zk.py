"""zk mode on the command line: publishing a model with its circuit, with a progress bar over
the build (settings, calibration, compile, SRS, keys, verifier) and the registration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from verinet.hub.manifest import ModelManifest
from verinet.hub.store import BlobStore
from verinet.runtime.tensors import Array
from verinet.verification.zk_hub import PUBLISH_STEPS, ZkPublished, publish_zk

STEP_LABELS: Final = {
    "settings": "generating circuit settings",
    "calibrate": "calibrating fixed-point scales",
    "compile": "compiling the circuit",
    "srs": "generating a local SRS (FOR TESTING ONLY)",
    "setup": "making the proving and verification keys",
    "verifier": "writing the EVM verifier",
    "solc": "compiling the verifier (solcjs)",
    "store": "storing the circuit files",
    "publish": "deploying the verifier, publishing the model",
    "register": "naming the verifier in ModelRegistry",
}
assert set(STEP_LABELS) == set(PUBLISH_STEPS)

TESTING_SRS = (
    "[yellow]No --srs given: a KZG SRS is generated on this machine. FOR TESTING ONLY: this "
    "machine knows its secret and could forge proofs. In production pass --srs with the SRS "
    "file of a public ceremony.[/]"
)


def publish_with_zk(
    client: Any,
    model_bytes: bytes,
    manifest: ModelManifest,
    sample: Mapping[str, Array],
    *,
    store: BlobStore,
    srs: Path | None,
    max_bytes: int,
    out: Console,
) -> ZkPublished:
    """`publish_zk` for `client`'s account, its steps shown as a progress bar on `out`."""
    if srs is None:
        out.print(TESTING_SRS)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as bars:
        task = bars.add_task("building the circuit", total=len(PUBLISH_STEPS))

        def progress(step: str, done: int, total: int) -> None:
            label = STEP_LABELS.get(step, step) if done < total else "done"
            bars.update(task, completed=done, total=total, description=label)

        return publish_zk(
            model_bytes,
            manifest,
            sample,
            store=store,
            registry=client.deployment.models,
            sender=client.address,
            srs_path=srs,
            max_model_bytes=max_bytes,
            progress=progress,
        )
