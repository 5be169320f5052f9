"""Node configuration: a TOML file, ``VERINET_*`` environment variables and command-line flags.

Precedence, highest first: flags (keyword arguments), environment, the file, defaults. Nested
fields use ``__`` in the environment (``VERINET_CHAIN__URL``). Secrets never live here: the
keystore password comes from ``VERINET_KEYSTORE_PASSWORD`` or a password file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from verinet.types import Address

MiB = 1024 * 1024
Isolation = Literal["process", "thread"]
"""Where a node runs models; see `verinet.node.worker`."""


class ChainSettings(BaseModel):
    url: str | None = Field(
        default=None, description="JSON-RPC endpoint; None: an in-process chain is handed in"
    )
    contracts: dict[str, Address] = Field(
        default_factory=dict,
        description="Token, Params, NodeRegistry, ModelRegistry, InferenceMarket addresses",
    )
    poll_interval: float = Field(default=0.5, gt=0, le=60, description="seconds between polls")


class NodeSettings(BaseSettings):
    """Everything a node needs to know to run (and nothing secret)."""

    model_config = SettingsConfigDict(
        env_prefix="VERINET_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(default=Path("verinet-node"), description="SQLite, blobs, logs")
    keystore: Path | None = Field(default=None, description="encrypted eth-account keystore")
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65_535, description="0: any free port")
    public_url: str | None = Field(default=None, description="endpoint registered on-chain")
    chain: ChainSettings = Field(default_factory=ChainSettings)
    peers: list[str] = Field(default_factory=list, description="blob peers for replication")
    fetch_allowlist: list[str] = Field(
        default_factory=list,
        description=(
            "base URLs a job's input may be fetched from besides registered nodes' endpoints "
            "and `peers` (requesters name the peers; no other address is contacted)"
        ),
    )
    fetch_deadline: float = Field(
        default=30.0, gt=0, le=3_600, description="seconds one input fetch may take, in all"
    )
    fetch_concurrency: int = Field(
        default=8, ge=1, le=256, description="input fetches at once; more are refused (503)"
    )
    max_request_bytes: int = Field(default=8 * MiB, gt=0, description="largest HTTP body")
    max_input_blob_bytes: int = Field(
        default=32 * MiB,
        gt=0,
        description=(
            "largest job input fetched by CID (an input whose JSON body is over "
            "max_request_bytes is sent so); both are advertised in /healthz"
        ),
    )
    workers: int = Field(default=1, ge=1, le=64, description="model worker processes")
    isolation: Isolation = Field(
        default="process",
        description=(
            "where models run: process (capped worker processes; a crash or an overrun fails "
            "only its request) or thread (the node's own process: tests only)"
        ),
    )
    memory_limit_mb: int = Field(
        default=4096, ge=256, description="address-space cap per worker process (RLIMIT_AS)"
    )
    execution_timeout: float = Field(default=60.0, gt=0, le=86_400)
    finalize: bool = Field(default=True, description="finalize jobs this node took part in")
    receipt_grace: int = Field(
        default=10,
        ge=0,
        description=(
            "seconds of chain time a quorum node that handed its receipt to the requester "
            "waits for submit_quorum before committing (at most half the commit window)"
        ),
    )
    watch_fraction: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "watchtower: the share of other nodes' optimistic results (and audited signed ones) "
            "this node re-executes and challenges when wrong; drawn with a private key per job"
        ),
    )
    jury: bool = Field(default=True, description="judge dispute games when drawn to the jury")
    withdraw_interval: float = Field(default=30.0, gt=0, description="seconds between claims")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or " " in value:
            raise ValueError("host must be an interface address such as 127.0.0.1")
        return value

    @classmethod
    def load(cls, file: Path | None = None, **flags: Any) -> NodeSettings:
        """Settings from `file` (TOML, optional), the environment and `flags` (which win)."""
        if file is not None and not file.is_file():
            raise FileNotFoundError(f"config file {file} does not exist")
        _Toml.path = file
        try:
            return cls(**{k: v for k, v in flags.items() if v is not None})
        finally:
            _Toml.path = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _Toml.path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_Toml.path))
        return tuple(sources)


class _Toml:
    path: Path | None = None
