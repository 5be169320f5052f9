"""Every error Verinet raises, in one tree.

```
VerinetError
├── ConfigError                      (ValueError)   fix the configuration and retry
├── JsonTooDeep                      (ValueError)   JSON nested past the limit, refused unparsed
├── TransientError                                   retry with backoff
│   ├── ChainUnavailable             (ConnectionError)
│   └── StateNotKept                 (LookupError)  the chain no longer has that block's state
├── ProtocolViolation                                a peer broke the rules: reject or slash
│   ├── InvalidReceipt               (ValueError)
│   │   ├── ReceiptWrongDomain
│   │   ├── ReceiptMalleable
│   │   └── ReceiptWrongSigner
│   ├── CommitmentMismatchError      (ValueError)
│   ├── BlobMismatch                 (ValueError)   a peer served bytes that do not hash to the CID
│   └── MalformedEvidence            (ValueError)   dispute evidence that is not well-formed
├── HubError                                         content addressing and the blob store
│   ├── MalformedCid                 (ValueError)
│   ├── BlobNotFound                 (LookupError)
│   ├── CorruptBlob                  (ValueError)   stored bytes no longer match their CID
│   ├── InvalidManifest              (ValueError)
│   ├── FetchFailed                  (TransientError) no peer served a verified copy
│   │   └── FetchTimeout             (TimeoutError) the transfer passed its deadline
│   └── FetchBusy                    (TransientError) too many fetches in flight: retry
├── UnsafeModel                      (ValueError)   refused before any runtime session exists
│   ├── MalformedModel                               not a parsable, well-formed ONNX model
│   ├── ModelCidMismatch                             the bytes do not hash to the expected CID
│   ├── ModelTooLarge                                file, tensor, node count or nesting over limit
│   │   ├── TensorTooLarge                           an initializer or constant-produced shape
│   │   └── GraphTooDeep                             subgraphs nested past the limit
│   ├── DisallowedOperator                           op outside the allowlist (or nondeterministic)
│   ├── CustomDomain                                 custom operator domain / model-local function
│   ├── ExternalData                                 tensors stored in files next to the model
│   └── UnsupportedSignature                         non-tensor inputs/outputs, manifest mismatch
├── InvalidInput                     (ValueError)   a request's tensors do not fit the model
│   ├── MissingInput / UnexpectedInput
│   ├── DtypeMismatch / ShapeMismatch
│   ├── InputTooLarge
│   │   └── PayloadTooLarge                          an HTTP body over the server's limit
│   ├── NonFiniteInput
│   ├── MalformedTensor                              a tensor's JSON/blob form is not well-formed
│   └── InputHashMismatch                            the inputs do not hash to the job's input hash
├── ExecutionFailed                  (RuntimeError) onnxruntime refused or failed a run
│   └── ExecutionTimeout             (TimeoutError) stopped at its deadline
├── ZkError                                          zk mode: circuits, keys, proofs, verifiers
│   ├── CircuitBuildFailed           (RuntimeError) ezkl could not build the circuit or its keys
│   ├── VerifierBuildFailed          (RuntimeError) the EVM verifier did not compile or fit
│   ├── CircuitTooLarge              (ValueError)   a model too large for zk mode's limits
│   └── ProvingFailed                (RuntimeError) ezkl could not make a witness or a proof
├── NodeError                                        what a node answers about its own work
│   ├── UnknownJob                   (LookupError)  no such job on-chain (or not for this node)
│   ├── ModelNotServed               (LookupError)  the node does not serve that model
│   ├── PeerNotAllowed               (PermissionError) a fetch named a peer not registered
│   └── ResultNotReady                               the node has no (publishable) result yet
├── ClientError                                      the SDK could not get a verified result
│   ├── NoNodes                                      no registered node serves the model
│   │   └── NotEnoughNodes                           fewer serve (or answer) than the job needs
│   ├── NodeRequestFailed            (TransientError) a node's HTTP API failed or refused
│   ├── JobRefunded                                  the job ended REFUNDED (no majority, no-show)
│   ├── JobNotSettled                (TimeoutError) the job did not end while the client waited
│   └── VerificationFailed           (ProtocolViolation) evidence did not check out
└── ContractRevert                                   the chain refused a transaction
    ├── ContractRevert subclasses, one per reason code the contracts use
    │   (NotEligible, OpenAssignments, TooEarly, ... see REVERT_REASONS)
    └── UnknownRevert                                revert data we could not decode
```

Contract reverts are decoded from the revert data (ABI `Error(string)`) and the reason
string is looked up as a whole in `REVERT_REASONS`; nothing matches on substrings.
"""

from __future__ import annotations

from typing import ClassVar


class VerinetError(Exception):
    """Root of every error Verinet raises."""


class ConfigError(VerinetError, ValueError):
    """The configuration is wrong; the message says which setting and how to fix it."""


class JsonTooDeep(VerinetError, ValueError):
    """A JSON document nests deeper than its reader takes (see `verinet.safe_json`)."""


class TransientError(VerinetError):
    """Something outside our control failed; retrying later may succeed."""


class ChainUnavailable(TransientError, ConnectionError):
    """The chain's JSON-RPC endpoint did not answer."""


class StateNotKept(TransientError, LookupError):
    """A read named a block whose state the chain does not have (the embedded chain keeps only
    its latest); read again at the latest block."""


class ProtocolViolation(VerinetError):
    """A peer sent something the protocol forbids."""


class InvalidReceipt(ProtocolViolation, ValueError):
    """An EIP-712 receipt failed verification."""


class ReceiptWrongDomain(InvalidReceipt):
    """The receipt was signed for another chain or another market contract."""


class ReceiptRequestRefused(ProtocolViolation):
    """A quorum receipt was asked for by someone other than the job's requester."""


class ReceiptMalleable(InvalidReceipt):
    """The signature's s value is in the upper half of the curve order (malleable twin)."""


class ReceiptWrongSigner(InvalidReceipt):
    """The receipt's signature does not recover to the node it names."""


class CommitmentMismatchError(ProtocolViolation, ValueError):
    """A reveal does not open the commitment made earlier."""


class BlobMismatch(ProtocolViolation, ValueError):
    """A peer served bytes that do not hash to the CID that was asked for."""


class MalformedEvidence(ProtocolViolation, ValueError):
    """A defender's dispute evidence (JSON, fields, hashes, tensors, size) is not well-formed."""


class HubError(VerinetError):
    """Content addressing, the blob store and manifests."""


class MalformedCid(HubError, ValueError):
    """Not a CIDv1 with a sha2-256 multihash and a codec Verinet uses."""


class BlobNotFound(HubError, LookupError):
    """The store holds no blob with this CID."""


class CorruptBlob(HubError, ValueError):
    """Bytes on disk no longer hash to their CID (disk fault, tampering); now quarantined."""


class InvalidManifest(HubError, ValueError):
    """A model manifest or chunk list failed validation."""


class FetchFailed(HubError, TransientError):
    """No peer served a verified copy of a blob; retry later or add peers."""


class FetchTimeout(FetchFailed, TimeoutError):
    """A transfer did not finish by its deadline (a peer too slow, or one dripping bytes)."""


class FetchBusy(HubError, TransientError):
    """As many fetches as the node allows are in flight; retry shortly, or send the data."""


class UnsafeModel(VerinetError, ValueError):
    """A model file was refused before any onnxruntime session was created."""


class MalformedModel(UnsafeModel):
    """The bytes are not a parsable, well-formed ONNX model."""


class ModelCidMismatch(UnsafeModel):
    """The model's bytes do not hash to the CID it was published under."""


class ModelTooLarge(UnsafeModel):
    """The file, a tensor, the node count or the nesting depth exceeds its limit."""


class TensorTooLarge(ModelTooLarge):
    """An initializer, constant or constant-produced shape holds more elements than allowed."""


class GraphTooDeep(ModelTooLarge):
    """Subgraphs (If/Loop/Scan bodies) are nested deeper than allowed."""


class DisallowedOperator(UnsafeModel):
    """An operator outside the allowlist (unknown, non-tensor or nondeterministic)."""


class CustomDomain(UnsafeModel):
    """An operator from a custom domain, which would need a custom-op library to run."""


class ExternalData(UnsafeModel):
    """Tensor data stored outside the model file; Verinet models are one self-contained file."""


class UnsupportedSignature(UnsafeModel):
    """Graph inputs/outputs Verinet cannot carry (non-tensor) or that disagree with the manifest."""


class InvalidInput(VerinetError, ValueError):
    """The request's tensors do not fit the model's declared inputs."""


class MissingInput(InvalidInput):
    """A declared input was not given."""


class UnexpectedInput(InvalidInput):
    """An input was given that the model does not declare."""


class DtypeMismatch(InvalidInput):
    """An input has another dtype than the manifest declares."""


class ShapeMismatch(InvalidInput):
    """An input's rank or a dimension disagrees with the manifest (or with another input)."""


class InputTooLarge(InvalidInput):
    """An input (or all inputs together) exceeds the size limit."""


class PayloadTooLarge(InputTooLarge):
    """An HTTP request body is over the server's limit (announced or found while streaming)."""


class NonFiniteInput(InvalidInput):
    """A float input holds NaN or Inf and the model's policy forbids them."""


class MalformedTensor(InvalidInput):
    """A tensor's wire form (JSON fields, base64, nesting, blob bytes) is not well-formed."""


class InputHashMismatch(InvalidInput):
    """The inputs sent for a job do not hash to the input hash the job committed on-chain."""


class ExecutionFailed(VerinetError, RuntimeError):
    """onnxruntime refused the model or failed during a run."""


class ExecutionTimeout(ExecutionFailed, TimeoutError):
    """A run passed its time limit and was stopped (the model loops or is too slow)."""


class ZkError(VerinetError):
    """zk mode: building a model's circuit, keys and EVM verifier, and proving runs of it."""


class CircuitBuildFailed(ZkError, RuntimeError):
    """ezkl could not turn the model into a circuit, settings or keys (an unsupported
    operator, a circuit too large for the SRS, an SRS that does not fit)."""


class VerifierBuildFailed(ZkError, RuntimeError):
    """The EVM verifier did not compile, or its runtime code exceeds the EIP-170 limit."""


class CircuitTooLarge(ZkError, ValueError):
    """A model (or its circuit's public instances) is over the size zk mode takes: proving
    cost grows with the model, and the market bounds a proof's instances."""


class ProvingFailed(ZkError, RuntimeError):
    """ezkl could not make the witness or the proof for these inputs (for example, a value
    outside the ranges the circuit was calibrated for)."""


class NodeError(VerinetError):
    """What a node answers about its own work (mapped to HTTP 404/409 by its API)."""


class UnknownJob(NodeError, LookupError):
    """No such job on-chain, or it is not one this node takes part in."""


class ModelNotServed(NodeError, LookupError):
    """The node does not serve this model (not registered for it, or not replicated yet)."""


class PeerNotAllowed(NodeError, PermissionError):
    """A request named a peer to fetch from that is neither a registered node's endpoint nor
    on this node's allowlist; the node contacts no such address."""


class ResultNotReady(NodeError):
    """The node has no result it may publish yet (not executed, or a quorum not yet revealed)."""


class InputSealed(NodeError):
    """A direct run was asked for the input of an open quorum job whose answers are still
    sealed: answering would let a seated node copy instead of compute."""


class ClientError(VerinetError):
    """The client SDK could not obtain a verified result."""


class NoNodes(ClientError):
    """No registered, staked node serves the model (or none answered)."""


class NotEnoughNodes(NoNodes):
    """Fewer nodes serve the model (or answer) than the job needs (a quorum's k); found
    before paying. `serving` says how many serve it, `needed` how many the job needs."""

    def __init__(self, message: str, *, serving: int, needed: int) -> None:
        super().__init__(message)
        self.serving = serving
        self.needed = needed


class NodeRequestFailed(ClientError, TransientError):
    """A node's HTTP API failed or refused a request; `status` and the node's message say why."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error


class JobRefunded(ClientError):
    """The job ended REFUNDED (no majority, or nobody answered in time); the escrow came back."""


class JobNotSettled(ClientError, TimeoutError):
    """The job did not end while the client waited; it still ends by its on-chain deadline."""


class VerificationFailed(ClientError, ProtocolViolation):
    """A result's evidence (hashes, signatures, on-chain state) did not check out."""


class ContractRevert(VerinetError):
    """A contract refused the transaction; `reason` is the contract's reason code."""

    reason: ClassVar[str] = ""
    hint: ClassVar[str] = ""

    def __init__(self, message: str | None = None) -> None:
        text = message or self.reason
        if self.hint:
            text = f"{text}: {self.hint}"
        super().__init__(text)


class UnknownRevert(ContractRevert):
    """Revert data that is not a known reason code (or empty: out of gas, bad opcode)."""

    def __init__(self, data: bytes, message: str | None = None) -> None:
        self.data = data
        super().__init__(message or f"transaction reverted (revert data 0x{data.hex()})")


def _revert(reason: str, hint: str, doc: str) -> type[ContractRevert]:
    cls = type(reason, (ContractRevert,), {"reason": reason, "hint": hint, "__doc__": doc})
    cls.__module__ = __name__
    return cls


# Reason code → (what to do about it). The contracts revert with exactly these strings.
_REASONS: dict[str, str] = {
    "ZeroAddress": "pass a non-zero address",
    "InvalidParam": "the parameter is outside its allowed range (see Params)",
    "UnbondingTooShort": (
        "unbonding_delay must exceed the commit, reveal, audit and challenge windows "
        "plus the longest dispute (Params.dispute_span)"
    ),
    "NotOwner": "only the contract owner may call this",
    "NotProtocol": "only registered protocol contracts may call this",
    "AlreadyRegistered": "this address already has a node; use set_endpoint to change it",
    "InvalidEndpoint": "give a non-empty endpoint URL of at most 256 bytes",
    "NotRegistered": "register the node first",
    "ZeroAmount": "the amount must be greater than zero",
    "TransferFailed": "the token transfer failed; check balance and allowance",
    "OpenAssignments": "the node has open jobs; wait until they are finalized",
    "InsufficientStake": "the amount exceeds the node's active stake",
    "NothingToWithdraw": "there is nothing to withdraw",
    "StillUnbonding": "the unbonding delay has not passed yet",
    "InvalidCid": "pass a binary CIDv1 (version byte 0x01, sha2-256 multihash)",
    "InvalidModes": "modes is a non-empty bit set of signed=1, quorum=2, optimistic=4, zk=8",
    "UnknownModel": "no model has this id",
    "NotModelOwner": "only the model's owner may do this",
    "NotLatestVersion": "new versions must follow the latest version of the model",
    "ModelDeprecated": "the model is deprecated; use its latest version",
    "FeeTooHigh": "the model's fee rose above your max_fee; check the fee and retry",
    "ModeNotAllowed": "the model's manifest does not allow this verification mode",
    "InvalidQuorum": "signed jobs take k=1; quorum jobs take min_quorum <= k <= max_quorum",
    "InvalidHash": "hashes must be non-zero",
    "JobNotOpen": "the job is not open (unknown id, or already settled)",
    "WrongMode": "this call does not apply to the job's verification mode",
    "DeadlinePassed": "the deadline for this step (of the job or the dispute game) has passed",
    "SeatsFull": "all k seats of the quorum are taken",
    "AlreadyCommitted": "this node already committed to the job",
    "SeatsTaken": "a node committed already; the quorum settles by commit and reveal now",
    "WrongReceiptCount": "submit exactly k receipts, one per seat",
    "DuplicateNode": "each receipt must come from a different node",
    "NotEligible": "the node was not drawn for this job (or lacks stake / the model)",
    "NotSeated": "only nodes that committed may reveal",
    "AlreadyRevealed": "this node already revealed",
    "RevealNotOpen": "reveals open when all seats are taken or the commit deadline passed",
    "CommitmentMismatch": "the reveal does not match the commitment (output hash, salt, node)",
    "InvalidSignature": "the signature must be 65 bytes (r, s, v) with v in {27, 28}",
    "MalleableSignature": "the signature's s is in the upper half order; normalise to low-s",
    "WrongSigner": "the receipt was not signed by the node it names",
    "TooEarly": (
        "too early: the job cannot be finalized yet (wait for its deadline, reveals or "
        "hold), or the game's deadline has not passed"
    ),
    "InsufficientAllowance": "approve the contract for at least the amount first",
    "InsufficientBalance": "the balance is lower than the amount",
    "PermitExpired": "the permit's deadline has passed; sign a new one",
    "PermitInvalidSignature": "the permit was not signed by the owner",
    "NotDeployer": "only the account that deployed the market may name its dispute game",
    "AlreadySet": "the dispute game is already named; it is set once",
    "InvalidTrace": "a traced claim covers 1 to 2**20 ops; run the job traced and claim its count",
    "NotDisputeGame": "only the market's dispute game may open or close disputes",
    "NotChallengeable": "only a submitted signed or optimistic result can be disputed",
    "ChallengeClosed": "the job's challenge (or audit) window has ended",
    "NotAudited": "this signed job was not drawn for audit; only drawn jobs can be disputed",
    "DisputeOpen": "a dispute over the job is still running; finalize after it ends",
    "NotStaked": "only a registered node with at least the minimum stake may challenge",
    "AlreadyChallenged": "this node already challenged the job",
    "Conflicted": "the defender and the challenger cannot act for the other side or vote",
    "NotYourMove": "it is the other party's move in this game (or the game is past that phase)",
    "StepMismatch": "sha256(agreed link || step hash) must equal the disputed link",
    "NotVoting": "the game is not in its vote",
    "AlreadyVoted": "this node already voted in the game",
    "CommitteeFull": "the committee has all its votes",
    "GameOver": "the game has ended (or does not exist)",
    "VerifierAlreadySet": (
        "the model's zk verifier is set once; publish a new version of the model for a new circuit"
    ),
    "InvalidVerifier": (
        "the verifier must be a deployed contract and the circuit must have at least one "
        "public input instance"
    ),
    "NoVerifier": "the model has no zk verifier yet; its owner sets one with set_verifier",
    "UseRequestZk": (
        "zk jobs commit to the circuit's input instances: request them with request_zk"
    ),
    "InstancesMismatch": (
        "the proof's input instances do not hash to the job's committed instances hash (or "
        "it has no output instances): prove the job's own inputs"
    ),
    "InvalidProof": "the model's verifier refused the proof; prove the run again",
}

# snekmate's modules revert with their own strings; map them to the same tree.
_FOREIGN: dict[str, str] = {
    "ownable: caller is not the owner": "NotOwner",
    "erc20: insufficient allowance": "InsufficientAllowance",
    "erc20: transfer amount exceeds balance": "InsufficientBalance",
    "erc20: burn amount exceeds balance": "InsufficientBalance",
    "erc20: expired deadline": "PermitExpired",
    "erc20: invalid signature": "PermitInvalidSignature",
    "ecdsa: invalid signature `s` value": "MalleableSignature",
    "ecdsa: invalid signature": "InvalidSignature",
    "erc20: transfer to the zero address": "ZeroAddress",
    "erc20: approve to the zero address": "ZeroAddress",
}

REVERT_REASONS: dict[str, type[ContractRevert]] = {
    reason: _revert(reason, hint, f"Contract reason code {reason!r}: {hint}.")
    for reason, hint in _REASONS.items()
}


def revert_class(reason: str) -> type[ContractRevert] | None:
    """The exception class for a contract's reason string, or None if it is not ours."""
    return REVERT_REASONS.get(_FOREIGN.get(reason, reason))


def __getattr__(name: str) -> type[ContractRevert]:
    # `from verinet.errors import NotEligible` works for every reason code.
    try:
        return REVERT_REASONS[name]
    except KeyError:
        raise AttributeError(name) from None
