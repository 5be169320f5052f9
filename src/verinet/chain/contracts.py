"""Typed wrappers for every Verinet contract, the same on every `Chain` backend.

Views return Python values (dataclasses for structs); transactions take a keyword
`sender` and return the `TxReceipt` (plus the new id where one is created). Reverts
raise the `verinet.errors.ContractRevert` subclass named by the contract's reason code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from eth_account.signers.local import LocalAccount

from verinet.chain._abi import BoundContract
from verinet.chain._backend import TxReceipt
from verinet.protocol.receipts import Receipt
from verinet.protocol.types import (
    Claim,
    Job,
    JobState,
    Mode,
    ModelInfo,
    NodeInfo,
    ParamsSnapshot,
    ZkVerifier,
)
from verinet.types import Address, Hash32, JobId, ModelId, Wei


class Token(BoundContract):
    """VNET: snekmate ERC-20 with EIP-2612 permit."""

    NAME = "Token"
    PERMIT_TYPES: ClassVar[dict[str, list[dict[str, str]]]] = {
        "Permit": [
            {"name": "owner", "type": "address"},
            {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ]
    }

    def name(self) -> str:
        return str(self._call("name"))

    def symbol(self) -> str:
        return str(self._call("symbol"))

    def decimals(self) -> int:
        return int(self._call("decimals"))

    def total_supply(self) -> Wei:
        return Wei(self._call("totalSupply"))

    def balance_of(self, account: Address) -> Wei:
        return Wei(self._call("balanceOf", account))

    def allowance(self, owner: Address, spender: Address) -> Wei:
        return Wei(self._call("allowance", owner, spender))

    def nonces(self, owner: Address) -> int:
        return int(self._call("nonces", owner))

    def approve(self, spender: Address, amount: Wei, *, sender: Address) -> TxReceipt:
        return self._send("approve", spender, amount, sender=sender)

    def transfer(self, to: Address, amount: Wei, *, sender: Address) -> TxReceipt:
        return self._send("transfer", to, amount, sender=sender)

    def transfer_from(
        self, owner: Address, to: Address, amount: Wei, *, sender: Address
    ) -> TxReceipt:
        return self._send("transferFrom", owner, to, amount, sender=sender)

    def mint(self, to: Address, amount: Wei, *, sender: Address) -> TxReceipt:
        """Only while the deployer kept the minter role (devnet faucets)."""
        return self._send("mint", to, amount, sender=sender)

    def sign_permit(
        self, owner: LocalAccount, spender: Address, value: Wei, deadline: int
    ) -> tuple[int, bytes, bytes]:
        """EIP-2612 permit signed by `owner`: (v, r, s) for `permit`."""
        signed = owner.sign_typed_data(
            domain_data={
                "name": "Verinet",
                "version": "1",
                "chainId": self.chain.chain_id,
                "verifyingContract": self.address,
            },
            message_types=self.PERMIT_TYPES,
            message_data={
                "owner": owner.address,
                "spender": spender,
                "value": value,
                "nonce": self.nonces(Address(owner.address)),
                "deadline": deadline,
            },
        )
        return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")

    def permit(
        self,
        owner: Address,
        spender: Address,
        value: Wei,
        deadline: int,
        v: int,
        r: bytes,
        s: bytes,
        *,
        sender: Address,
    ) -> TxReceipt:
        return self._send("permit", owner, spender, value, deadline, v, r, s, sender=sender)


class Params(BoundContract):
    """The protocol's tunable numbers."""

    NAME = "Params"
    _FIELDS = (
        "min_stake",
        "commit_window",
        "reveal_window",
        "audit_window",
        "challenge_window",
        "unbonding_delay",
        "min_quorum",
        "max_quorum",
        "selection_oversample",
        "selection_round",
        "slash_fault_bps",
        "slash_noshow_bps",
        "owner_bps",
        "treasury_bps",
        "treasury",
        "challenge_bond",
        "move_timeout",
        "vote_window",
        "committee_size",
        "dispute_winner_bps",
        "dispute_committee_bps",
        "audit_bps",
        "audit_margin_bps",
    )

    def snapshot(self) -> ParamsSnapshot:
        values: dict[str, Any] = {f: self._call(f) for f in self._FIELDS}
        return ParamsSnapshot(**values)

    def owner(self) -> Address:
        return Address(self._call("owner"))

    def selection_round(self) -> int:
        """Seconds after which the eligibility draw for an unfilled job doubles."""
        return int(self._call("selection_round"))

    def set_min_stake(self, amount: Wei, *, sender: Address) -> TxReceipt:
        return self._send("set_min_stake", amount, sender=sender)

    def set_windows(
        self,
        commit: int,
        reveal: int,
        audit: int,
        challenge: int,
        unbonding: int,
        *,
        sender: Address,
    ) -> TxReceipt:
        return self._send("set_windows", commit, reveal, audit, challenge, unbonding, sender=sender)

    def set_quorum_bounds(self, min_k: int, max_k: int, *, sender: Address) -> TxReceipt:
        return self._send("set_quorum_bounds", min_k, max_k, sender=sender)

    def set_selection(self, oversample: int, round_seconds: int, *, sender: Address) -> TxReceipt:
        return self._send("set_selection", oversample, round_seconds, sender=sender)

    def set_disputes(
        self,
        bond: Wei,
        move_timeout: int,
        vote_window: int,
        committee: int,
        winner_bps: int,
        committee_bps: int,
        *,
        sender: Address,
    ) -> TxReceipt:
        return self._send(
            "set_disputes",
            bond,
            move_timeout,
            vote_window,
            committee,
            winner_bps,
            committee_bps,
            sender=sender,
        )

    def set_audit(self, floor_bps: int, margin_bps: int, *, sender: Address) -> TxReceipt:
        return self._send("set_audit", floor_bps, margin_bps, sender=sender)

    def dispute_span(self) -> int:
        """The longest a dispute can run once opened, in seconds."""
        return int(self._call("dispute_span"))

    def set_slash(self, fault_bps: int, noshow_bps: int, *, sender: Address) -> TxReceipt:
        return self._send("set_slash", fault_bps, noshow_bps, sender=sender)

    def set_fee_split(self, owner_bps: int, treasury_bps: int, *, sender: Address) -> TxReceipt:
        return self._send("set_fee_split", owner_bps, treasury_bps, sender=sender)

    def set_treasury(self, treasury: Address, *, sender: Address) -> TxReceipt:
        return self._send("set_treasury", treasury, sender=sender)

    def transfer_ownership(self, new_owner: Address, *, sender: Address) -> TxReceipt:
        return self._send("transfer_ownership", new_owner, sender=sender)


class NodeRegistry(BoundContract):
    """Node registration, stake, unbonding, slashing and sortition."""

    NAME = "NodeRegistry"

    def node(self, address: Address) -> NodeInfo:
        registered, endpoint, stake, unbonding, unbond_at, open_, slashed, stake_block = self._call(
            "nodes", address
        )
        return NodeInfo(
            address=address,
            registered=registered,
            endpoint=endpoint,
            stake=Wei(stake),
            unbonding=Wei(unbonding),
            unbond_at=unbond_at,
            open_assignments=open_,
            slashed=Wei(slashed),
            stake_block=stake_block,
        )

    def serves(self, node: Address, model_id: ModelId) -> bool:
        return bool(self._call("serves", node, model_id))

    def is_protocol(self, target: Address) -> bool:
        """Whether `target` may assign work (an active protocol contract)."""
        return int(self._call("protocol", target)) == 1

    def total_stake(self) -> Wei:
        return Wei(self._call("total_stake"))

    def total_bonded(self) -> Wei:
        return Wei(self._call("total_bonded"))

    def node_count(self) -> int:
        return int(self._call("node_count"))

    def bonded(self, node: Address) -> Wei:
        return Wei(self._call("bonded", node))

    def is_eligible(
        self,
        node: Address,
        model_id: ModelId,
        seed: Hash32,
        multiplier: int,
        total: Wei,
        before_block: int,
    ) -> bool:
        return bool(
            self._call("is_eligible", node, model_id, seed, multiplier, total, before_block)
        )

    def set_protocol(self, target: Address, active: bool, *, sender: Address) -> TxReceipt:
        """Activate a protocol contract, or retire it (it may still finish its open work)."""
        return self._send("set_protocol", target, active, sender=sender)

    def register(self, endpoint: str, *, sender: Address) -> TxReceipt:
        return self._send("register", endpoint, sender=sender)

    def set_endpoint(self, endpoint: str, *, sender: Address) -> TxReceipt:
        return self._send("set_endpoint", endpoint, sender=sender)

    def set_serving(self, model_ids: list[ModelId], serving: bool, *, sender: Address) -> TxReceipt:
        return self._send("set_serving", model_ids, serving, sender=sender)

    def stake(self, amount: Wei, *, sender: Address) -> TxReceipt:
        return self._send("stake", amount, sender=sender)

    def request_unstake(self, amount: Wei, *, sender: Address) -> TxReceipt:
        return self._send("request_unstake", amount, sender=sender)

    def withdraw(self, *, sender: Address) -> TxReceipt:
        return self._send("withdraw", sender=sender)


class ModelRegistry(BoundContract):
    """Published models: CIDs, owner, fee, allowed modes and zk verifiers."""

    NAME = "ModelRegistry"

    def model(self, model_id: ModelId) -> ModelInfo:
        owner, model_cid, manifest_cid, fee, modes, version, family, deprecated = self._call(
            "models", model_id
        )
        return ModelInfo(
            model_id=model_id,
            owner=owner,
            model_cid=model_cid,
            manifest_cid=manifest_cid,
            fee=Wei(fee),
            modes=Mode(modes),
            version=version,
            family=ModelId(family),
            deprecated=deprecated,
        )

    def latest(self, family: ModelId) -> ModelId:
        return ModelId(self._call("latest", family))

    def model_count(self) -> int:
        return int(self._call("model_count"))

    def _created(self, receipt: TxReceipt) -> ModelId:
        (event,) = self.events(receipt, "ModelPublished")
        return ModelId(event.args["model_id"])

    def publish(
        self, model_cid: bytes, manifest_cid: bytes, fee: Wei, modes: Mode, *, sender: Address
    ) -> tuple[ModelId, TxReceipt]:
        receipt = self._send("publish", model_cid, manifest_cid, fee, int(modes), sender=sender)
        return self._created(receipt), receipt

    def publish_version(
        self,
        previous_id: ModelId,
        model_cid: bytes,
        manifest_cid: bytes,
        fee: Wei,
        modes: Mode,
        *,
        sender: Address,
    ) -> tuple[ModelId, TxReceipt]:
        receipt = self._send(
            "publish_version", previous_id, model_cid, manifest_cid, fee, int(modes), sender=sender
        )
        return self._created(receipt), receipt

    def deprecate(self, model_id: ModelId, *, sender: Address) -> TxReceipt:
        return self._send("deprecate", model_id, sender=sender)

    def set_fee(self, model_id: ModelId, fee: Wei, *, sender: Address) -> TxReceipt:
        return self._send("set_fee", model_id, fee, sender=sender)

    def set_model_owner(self, model_id: ModelId, owner: Address, *, sender: Address) -> TxReceipt:
        return self._send("set_model_owner", model_id, owner, sender=sender)

    def set_verifier(
        self, model_id: ModelId, verifier: Address, input_instances: int, *, sender: Address
    ) -> TxReceipt:
        """Name a zk model's EVM verifier and how many public instances are its inputs
        (once, by the model's owner)."""
        return self._send("set_verifier", model_id, verifier, input_instances, sender=sender)

    def verifier_of(self, model_id: ModelId) -> ZkVerifier:
        verifier, input_instances = self._call("verifier_of", model_id)
        return ZkVerifier(address=Address(verifier), input_instances=int(input_instances))


class InferenceMarket(BoundContract):
    """Job escrow, commit-reveal quorums, signed receipts, settlement."""

    NAME = "InferenceMarket"

    def job(self, job_id: JobId) -> Job:
        v = self._call("jobs", job_id)
        return Job(
            job_id=job_id,
            requester=v[0],
            model_id=ModelId(v[1]),
            model_owner=v[2],
            input_hash=Hash32(v[3]),
            mode=Mode(v[4]) if v[4] else Mode(0),
            k=v[5],
            escrow=Wei(v[6]),
            seed=Hash32(v[7]),
            stake_total=Wei(v[8]),
            request_block=v[9],
            requested_at=v[10],
            commit_deadline=v[11],
            reveal_deadline=v[12],
            finalize_after=v[13],
            state=JobState(v[14]),
            seats=v[15],
            reveals=v[16],
            result=Hash32(v[17]),
        )

    def _models_terms(self, model_id: ModelId) -> tuple[Address, Wei, int, bool]:
        models = ModelRegistry(self.chain, self._call("MODELS"))
        owner, fee, modes, deprecated = models._call("terms", model_id)
        return owner, Wei(fee), modes, deprecated

    def seats_of(self, job_id: JobId) -> list[Address]:
        return list(self._call("seats_of", job_id))

    def commitment_of(self, job_id: JobId, node: Address) -> Hash32:
        return Hash32(self._call("commitments", job_id, node))

    def revealed_by(self, job_id: JobId, node: Address) -> Hash32:
        return Hash32(self._call("revealed", job_id, node))

    def owed(self, account: Address) -> Wei:
        return Wei(self._call("owed", account))

    def job_count(self) -> int:
        return int(self._call("job_count"))

    def total_escrow(self) -> Wei:
        return Wei(self._call("total_escrow"))

    def total_owed(self) -> Wei:
        return Wei(self._call("total_owed"))

    def is_eligible(self, job_id: JobId, node: Address) -> bool:
        return bool(self._call("is_eligible", job_id, node))

    def finalizable(self, job_id: JobId) -> bool:
        return bool(self._call("finalizable", job_id))

    def may_finalize(self, job_id: JobId) -> bool:
        """Whether a finalize sent now may succeed. `finalizable` answers as of the latest
        block, but a signed job's audit draw is the hash of the block holding its receipt:
        while that block is the latest the draw is open, and the finalize transaction's
        own block decides it (a held job then reverts TooEarly)."""
        if self.finalizable(job_id):
            return True
        claim = self.claim_of(job_id)
        return (
            claim.audited
            and claim.open_disputes == 0
            and claim.submit_block >= self.chain.block_number()
        )

    def receipt_digest(self, job_id: JobId, output_hash: Hash32, node: Address) -> Hash32:
        return Hash32(self._call("receipt_digest", job_id, output_hash, node))

    def request(
        self,
        model_id: ModelId,
        input_hash: Hash32,
        mode: Mode,
        k: int,
        *,
        max_fee: Wei | None = None,
        sender: Address,
    ) -> tuple[JobId, TxReceipt]:
        """Open a job escrowing fee * k. `max_fee` (default: the fee read now) caps the
        fee per execution, so a fee raised in between cannot take more."""
        if max_fee is None:
            _, max_fee, _, _ = self._models_terms(model_id)
        receipt = self._send("request", model_id, input_hash, int(mode), k, max_fee, sender=sender)
        (event,) = self.events(receipt, "JobRequested")
        return JobId(event.args["job_id"]), receipt

    def request_zk(
        self,
        model_id: ModelId,
        input_hash: Hash32,
        instances_hash: Hash32,
        *,
        max_fee: Wei | None = None,
        sender: Address,
    ) -> tuple[JobId, TxReceipt]:
        """Open a zk job committed to the circuit's input instances (`instances_hash`, see
        `verinet.protocol.zk.instances_hash`); `max_fee` as for `request`."""
        if max_fee is None:
            _, max_fee, _, _ = self._models_terms(model_id)
        receipt = self._send(
            "request_zk", model_id, input_hash, instances_hash, max_fee, sender=sender
        )
        (event,) = self.events(receipt, "JobRequested")
        return JobId(event.args["job_id"]), receipt

    def instances_hash(self, job_id: JobId) -> Hash32:
        """A zk job's committed input instances hash (zero for other jobs)."""
        return Hash32(self._call("instances_hash", job_id))

    def submit_proof(
        self, job_id: JobId, proof: bytes, instances: Sequence[int], *, sender: Address
    ) -> TxReceipt:
        """Settle a zk job with a proof and its public instances (inputs then outputs),
        sent by a node drawn for it; checked on-chain and paid in this transaction."""
        return self._send("submit_proof", job_id, proof, list(instances), sender=sender)

    def commit(self, job_id: JobId, commitment: Hash32, *, sender: Address) -> TxReceipt:
        return self._send("commit", job_id, commitment, sender=sender)

    def reveal(
        self, job_id: JobId, output_hash: Hash32, salt: bytes, *, sender: Address
    ) -> TxReceipt:
        return self._send("reveal", job_id, output_hash, salt, sender=sender)

    def submit_receipt(self, receipt: Receipt, *, sender: Address) -> TxReceipt:
        return self._send(
            "submit_receipt",
            receipt.job_id,
            receipt.output_hash,
            receipt.node,
            receipt.signature,
            sender=sender,
        )

    def submit_quorum(self, receipts: Sequence[Receipt], *, sender: Address) -> TxReceipt:
        """Settle a quorum job in one transaction with the k receipts of k distinct drawn
        nodes (all for the same job), before any node has committed."""
        if not receipts or len({r.job_id for r in receipts}) != 1:
            raise ValueError("submit_quorum takes receipts for one job")
        return self._send(
            "submit_quorum",
            receipts[0].job_id,
            [r.output_hash for r in receipts],
            [r.node for r in receipts],
            [r.signature for r in receipts],
            sender=sender,
        )

    def submit_claim(
        self,
        job_id: JobId,
        output_hash: Hash32,
        trace_final: Hash32,
        trace_root: Hash32,
        ops: int,
        *,
        sender: Address,
    ) -> TxReceipt:
        """An optimistic job's traced result, sent by the drawn node itself."""
        return self._send(
            "submit_claim", job_id, output_hash, trace_final, trace_root, ops, sender=sender
        )

    def claim_of(self, job_id: JobId) -> Claim:
        v = self._call("claim_of", job_id)
        return Claim(
            node=v[0],
            output_hash=Hash32(v[1]),
            trace_final=Hash32(v[2]),
            trace_root=Hash32(v[3]),
            ops=v[4],
            submit_block=v[5],
            audit_bps=v[6],
            audited=v[7],
            open_disputes=v[8],
        )

    def dispute_game(self) -> Address:
        return Address(self._call("dispute_game"))

    def set_dispute_game(self, game: Address, *, sender: Address) -> TxReceipt:
        return self._send("set_dispute_game", game, sender=sender)

    def finalize(self, job_id: JobId, *, sender: Address) -> TxReceipt:
        return self._send("finalize", job_id, sender=sender)

    def withdraw(self, *, sender: Address) -> TxReceipt:
        return self._send("withdraw", sender=sender)
