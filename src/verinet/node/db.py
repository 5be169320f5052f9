"""A node's job state in SQLite: what it was asked, what it computed, what it sent on-chain.

Every step that leads to a transaction is written (and synced) *before* the transaction is
sent: a node killed at any point restarts from the last written step, checks the chain for the
effect of a transaction it may have sent, and never sends it twice.

A database belongs to one chain (`ChainIdentity`: chain id, the market and registry addresses,
the first block's hash), recorded when it is made. Job and game ids count from 1 on every
deployment, so the records of another chain (a devnet restarted with the same chain id and
the same contract addresses) would make the node skip the new chain's jobs as done: a
database of another chain, or one from before identities were recorded that holds anything,
is moved aside (`moved_aside`, for the node to log) and a fresh one started.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verinet.protocol.types import Mode
from verinet.types import Address, Hash32, JobId, ModelId

if TYPE_CHECKING:
    from verinet.chain.deploy import Deployment

SCHEMA_VERSION = 3  # 2: handed_at; 3: the trace commitment, claim_tx, games


class Stage(StrEnum):
    """Where a job stands for this node."""

    AWAITING_INPUT = "awaiting_input"  # requested on-chain; the client has not sent the input
    READY = "ready"  # executed; outputs stored; waiting to be drawn
    COMMITTING = "committing"  # commitment + salt saved; commit tx may be in flight
    COMMITTED = "committed"
    REVEALING = "revealing"  # reveal tx may be in flight
    REVEALED = "revealed"
    SUBMITTING = "submitting"  # signed receipt saved; submit tx may be in flight
    SUBMITTED = "submitted"
    CLAIMING = "claiming"  # an optimistic claim is due; the claim tx may be in flight
    WATCHING = "watching"  # another node's result is in: compare it with ours, challenge
    DONE = "done"  # the job ended on-chain (see `outcome`)
    LOST = "lost"  # not drawn in time, seats full, or another node's receipt won
    FAILED = "failed"  # the input could not be executed (see `error`)
    WATCHED = "watched"  # another node's result, checked: confirmed or challenged (`error`)
    PROVING = "proving"  # drawn for a zk job: proving, then the proof tx may be in flight

    @property
    def final(self) -> bool:
        return self in _FINAL


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: JobId
    model_id: ModelId
    mode: Mode
    k: int
    input_hash: Hash32
    stage: Stage
    reveal_deadline: int
    input_cid: str | None = None
    output_cid: str | None = None
    output_hash: Hash32 | None = None
    salt: bytes | None = None
    signature: bytes | None = None
    outcome: str | None = None  # PAID / REFUNDED once the chain says so
    error: str | None = None
    commit_tx: str | None = None
    reveal_tx: str | None = None
    receipt_tx: str | None = None
    finalize_tx: str | None = None
    updated_at: float = 0.0
    handed_at: int | None = None  # chain time this node handed its quorum receipt out
    ops: int | None = None  # an optimistic run's op count, h_N and Merkle root
    trace_final: bytes | None = None
    trace_root: bytes | None = None
    claim_tx: str | None = None
    proof_cid: str | None = None  # a zk job's proof and instances (JSON blob), once proved
    proof_tx: str | None = None

    @property
    def sealed(self) -> bool:
        """A quorum answer not yet public: neither revealed nor settled. Showing its output
        (hash, blob or receipt) now would let another seat copy it."""
        return self.mode == Mode.QUORUM and self.reveal_tx is None and self.outcome is None

    def to_json(self) -> dict[str, Any]:
        """The record as served over HTTP: never the salt, and a sealed answer's output
        fields only once it is public."""
        out: dict[str, Any] = {}
        hidden = {"salt"} | ({"output_hash", "output_cid", "signature"} if self.sealed else set())
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in hidden:
                continue
            if isinstance(value, bytes):
                value = "0x" + value.hex()
            elif isinstance(value, Mode):
                value = value.name.lower() if value.name else int(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class ChainIdentity:
    """Which chain and deployment a node's records belong to."""

    chain_id: int
    market: Address
    registry: Address
    genesis: str  # the first block's hash, 0x-hex

    @classmethod
    def of(cls, deployment: Deployment) -> ChainIdentity:
        chain = deployment.chain
        return cls(
            chain_id=chain.chain_id,
            market=Address(deployment.market.address.lower()),
            registry=Address(deployment.nodes.address.lower()),
            genesis="0x" + chain.genesis_hash().hex(),
        )

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


_COLUMNS = [f.name for f in fields(JobRecord)]
_FINAL = frozenset({Stage.DONE, Stage.LOST, Stage.FAILED, Stage.WATCHED})
_ADDED_COLUMNS = {  # by schema version
    "handed_at": "INTEGER",
    "ops": "INTEGER",
    "trace_final": "BLOB",
    "trace_root": "BLOB",
    "claim_tx": "TEXT",
    "proof_cid": "TEXT",
    "proof_tx": "TEXT",
}


class JobDB:
    """Job records keyed by job id, plus the chain cursor. Safe to use from several threads.

    With `identity`, the database at `path` must be that chain's: one of another chain is
    renamed to ``<stem>.<chain id>-<time>.replaced<suffix>`` (now `moved_aside`) first.
    """

    def __init__(self, path: Path, identity: ChainIdentity | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.moved_aside: Path | None = None
        self.replaced_identity: str | None = None  # what the moved database recorded
        self._conn = self._open(path)
        self._lock = threading.Lock()
        if identity is None:
            return
        recorded = self._meta("chain")
        if recorded is not None and recorded == identity.to_text():
            return
        if recorded is not None or self._holds_anything():
            self._conn.close()
            self.moved_aside = _move_aside(path, recorded)
            self.replaced_identity = recorded
            self._conn = self._open(path)
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('chain', ?)", (identity.to_text(),))

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _holds_anything(self) -> bool:
        return any(
            self._conn.execute(query).fetchone() is not None
            for query in (
                "SELECT 1 FROM jobs LIMIT 1",
                "SELECT 1 FROM games LIMIT 1",
                "SELECT 1 FROM meta WHERE key = 'cursor'",
            )
        )

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS jobs (
                job_id INTEGER PRIMARY KEY, model_id INTEGER, mode INTEGER, k INTEGER,
                input_hash BLOB, stage TEXT, reveal_deadline INTEGER, input_cid TEXT,
                output_cid TEXT, output_hash BLOB, salt BLOB, signature BLOB, outcome TEXT,
                error TEXT, commit_tx TEXT, reveal_tx TEXT, receipt_tx TEXT,
                finalize_tx TEXT, updated_at REAL, handed_at INTEGER)"""
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS games (
                game_id INTEGER PRIMARY KEY, job_id INTEGER, role TEXT, done INTEGER,
                voted INTEGER, outcome TEXT, note TEXT, updated_at REAL)"""
        )
        # Columns added since a database was made come last in it: add what is missing
        # (inserts and selects name their columns, so the order does not matter).
        have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_stage ON jobs (stage)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        return conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _record(row: tuple[Any, ...]) -> JobRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["job_id"] = JobId(values["job_id"])
        values["model_id"] = ModelId(values["model_id"])
        values["mode"] = Mode(values["mode"])
        values["stage"] = Stage(values["stage"])
        values["input_hash"] = Hash32(values["input_hash"])
        if values["output_hash"] is not None:
            values["output_hash"] = Hash32(values["output_hash"])
        return JobRecord(**values)

    def insert(self, record: JobRecord) -> bool:
        """Add a job the node has not seen; False if it already has it."""
        record = replace(record, updated_at=time.time())
        values = [getattr(record, c) for c in _COLUMNS]
        values[_COLUMNS.index("mode")] = int(record.mode)
        values[_COLUMNS.index("stage")] = str(record.stage)
        with self._lock:
            cursor = self._conn.execute(
                f"INSERT OR IGNORE INTO jobs ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )
            return cursor.rowcount == 1

    def get(self, job_id: JobId) -> JobRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else self._record(row)

    def update(self, job_id: JobId, **changes: Any) -> JobRecord:
        """Write `changes` durably (the row is synced before this returns)."""
        changes["updated_at"] = time.time()
        if "stage" in changes:
            changes["stage"] = str(changes["stage"])
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self._lock:
            self._conn.execute(
                f"UPDATE jobs SET {sets} WHERE job_id = ?", [*changes.values(), job_id]
            )
        record = self.get(job_id)
        if record is None:
            raise KeyError(job_id)
        return record

    def active(self) -> list[JobRecord]:
        """Jobs not yet final, oldest first."""
        finals = tuple(str(s) for s in Stage if s.final)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs "
                f"WHERE stage NOT IN ({', '.join('?' * len(finals))}) ORDER BY job_id",
                finals,
            ).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT stage, COUNT(*) FROM jobs GROUP BY stage").fetchall()
        return {stage: n for stage, n in rows}

    def cursor(self) -> int:
        """The next block whose events the watcher has not processed."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, block: int) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (str(block),))

    # -- dispute games this node plays or judges -------------------------------------------

    def add_game(self, game_id: int, job_id: JobId, role: str) -> bool:
        """Start following a game as `role` (defender, challenger or juror); False if known."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO games (game_id, job_id, role, done, voted, updated_at) "
                "VALUES (?, ?, ?, 0, 0, ?)",
                (game_id, job_id, role, time.time()),
            )
            return cursor.rowcount == 1

    def game(self, game_id: int) -> GameRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_GAME_COLUMNS} FROM games WHERE game_id = ?", (game_id,)
            ).fetchone()
        return None if row is None else GameRecord(*row)

    def update_game(self, game_id: int, **changes: Any) -> None:
        changes["updated_at"] = time.time()
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self._lock:
            self._conn.execute(
                f"UPDATE games SET {sets} WHERE game_id = ?", [*changes.values(), game_id]
            )

    def open_games(self) -> list[GameRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_GAME_COLUMNS} FROM games WHERE done = 0 ORDER BY game_id"
            ).fetchall()
        return [GameRecord(*row) for row in rows]

    def games(self) -> list[GameRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_GAME_COLUMNS} FROM games ORDER BY game_id"
            ).fetchall()
        return [GameRecord(*row) for row in rows]


_GAME_COLUMNS = "game_id, job_id, role, done, voted, outcome, note"


def _move_aside(path: Path, recorded: str | None) -> Path:
    """Rename the database at `path` (and its WAL files) out of the way; the new name."""
    chain_id = "unknown" if recorded is None else str(json.loads(recorded)["chain_id"])
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for n in range(1000):
        target = path.with_name(f"{path.stem}.{chain_id}-{stamp}-{n}.replaced{path.suffix}")
        if not target.exists():
            break
    for extra in ("-wal", "-shm"):  # none left after a clean close; a crash leaves them
        side = path.with_name(path.name + extra)
        if side.exists():
            side.rename(target.with_name(target.name + extra))
    path.rename(target)
    return target


@dataclass(frozen=True, slots=True)
class GameRecord:
    """A dispute game this node follows: as a party, or as a possible juror."""

    game_id: int
    job_id: int
    role: str  # defender, challenger, juror
    done: int
    voted: int
    outcome: str | None
    note: str | None
