# pragma version ~=0.4.3
"""
@title Verinet model registry
@notice Anchors published models on-chain: the binary CIDv1 of the model file and of
        its manifest, the owner who earns a share of every fee, the fee per execution
        and the verification modes the manifest allows.
        Every version is its own model id; versions of one model share a `family`
        (the id of the first version) and `latest[family]` points at the newest.
        A deprecated model accepts no new jobs; jobs already requested finish.
        A model whose modes include zk has an EVM verifier for its circuit, set once
        by its owner (`set_verifier`): the market checks every zk job's proof with it.
        Reverts carry a reason code equal to a Verinet exception name.
"""

MAX_CID: constant(uint256) = 64
# Verification modes, as a bit set: signed, quorum, optimistic, zk.
MODE_SIGNED: constant(uint256) = 1
MODE_QUORUM: constant(uint256) = 2
MODE_OPTIMISTIC: constant(uint256) = 4
MODE_ZK: constant(uint256) = 8
ALL_MODES: constant(uint256) = 15


struct Model:
    owner: address
    model_cid: Bytes[MAX_CID]
    manifest_cid: Bytes[MAX_CID]
    fee: uint256
    modes: uint256
    version: uint256
    family: uint256
    deprecated: bool


struct Verifier:
    verifier: address
    # How many public instances (the first ones) are the circuit's inputs; the rest
    # are its outputs.
    input_instances: uint256


models: public(HashMap[uint256, Model])
_verifiers: HashMap[uint256, Verifier]
latest: public(HashMap[uint256, uint256])
model_count: public(uint256)


event ModelPublished:
    model_id: indexed(uint256)
    owner: indexed(address)
    family: indexed(uint256)
    version: uint256
    model_cid: Bytes[MAX_CID]
    manifest_cid: Bytes[MAX_CID]
    fee: uint256
    modes: uint256

event ModelDeprecated:
    model_id: indexed(uint256)

event ModelFeeChanged:
    model_id: indexed(uint256)
    fee: uint256

event ModelOwnerChanged:
    model_id: indexed(uint256)
    owner: indexed(address)

event VerifierSet:
    model_id: indexed(uint256)
    verifier: indexed(address)
    input_instances: uint256


@internal
@pure
def _check_cid(cid: Bytes[MAX_CID]):
    # CIDv1: version byte 0x01, a codec varint, then a multihash of at least
    # code + length + 32 digest bytes.
    assert len(cid) >= 36 and convert(slice(cid, 0, 1), bytes1) == 0x01, "InvalidCid"


@internal
def _store(
    owner: address,
    model_cid: Bytes[MAX_CID],
    manifest_cid: Bytes[MAX_CID],
    fee: uint256,
    modes: uint256,
    version: uint256,
    family: uint256,
) -> uint256:
    self._check_cid(model_cid)
    self._check_cid(manifest_cid)
    assert modes != 0 and modes & ALL_MODES == modes, "InvalidModes"
    model_id: uint256 = self.model_count + 1
    self.model_count = model_id
    fam: uint256 = family
    if fam == 0:
        fam = model_id
    self.models[model_id] = Model(
        owner=owner,
        model_cid=model_cid,
        manifest_cid=manifest_cid,
        fee=fee,
        modes=modes,
        version=version,
        family=fam,
        deprecated=False,
    )
    self.latest[fam] = model_id
    log ModelPublished(
        model_id=model_id,
        owner=owner,
        family=fam,
        version=version,
        model_cid=model_cid,
        manifest_cid=manifest_cid,
        fee=fee,
        modes=modes,
    )
    return model_id


@external
def publish(model_cid: Bytes[MAX_CID], manifest_cid: Bytes[MAX_CID], fee: uint256, modes: uint256) -> uint256:
    """
    @notice Publishes version 1 of a new model owned by the caller; returns its id.
    """
    return self._store(msg.sender, model_cid, manifest_cid, fee, modes, 1, 0)


@external
def publish_version(
    previous_id: uint256, model_cid: Bytes[MAX_CID], manifest_cid: Bytes[MAX_CID], fee: uint256, modes: uint256
) -> uint256:
    """
    @notice Publishes the next version of the family of `previous_id`, which must be
            its latest version. The previous version stays usable until deprecated.
    """
    prev_owner: address = self.models[previous_id].owner
    assert prev_owner != empty(address), "UnknownModel"
    assert prev_owner == msg.sender, "NotModelOwner"
    family: uint256 = self.models[previous_id].family
    assert self.latest[family] == previous_id, "NotLatestVersion"
    return self._store(
        msg.sender, model_cid, manifest_cid, fee, modes, self.models[previous_id].version + 1, family
    )


@internal
@view
def _only_model_owner(model_id: uint256):
    owner: address = self.models[model_id].owner
    assert owner != empty(address), "UnknownModel"
    assert owner == msg.sender, "NotModelOwner"


@external
def deprecate(model_id: uint256):
    self._only_model_owner(model_id)
    assert not self.models[model_id].deprecated, "ModelDeprecated"
    self.models[model_id].deprecated = True
    log ModelDeprecated(model_id=model_id)


@external
def set_fee(model_id: uint256, fee: uint256):
    self._only_model_owner(model_id)
    self.models[model_id].fee = fee
    log ModelFeeChanged(model_id=model_id, fee=fee)


@external
def set_model_owner(model_id: uint256, owner: address):
    self._only_model_owner(model_id)
    assert owner != empty(address), "ZeroAddress"
    self.models[model_id].owner = owner
    log ModelOwnerChanged(model_id=model_id, owner=owner)


@external
def set_verifier(model_id: uint256, verifier: address, input_instances: uint256):
    """
    @notice Names the EVM verifier of a zk model's circuit (its verification key is in
            the verifier's code) and how many of a proof's public instances are inputs.
            Set once: a proof checked by another verifier would prove another circuit,
            so a new circuit is a new version of the model.
    """
    self._only_model_owner(model_id)
    assert self.models[model_id].modes & MODE_ZK != 0, "ModeNotAllowed"
    assert self._verifiers[model_id].verifier == empty(address), "VerifierAlreadySet"
    assert verifier.is_contract and input_instances > 0, "InvalidVerifier"
    self._verifiers[model_id] = Verifier(verifier=verifier, input_instances=input_instances)
    log VerifierSet(model_id=model_id, verifier=verifier, input_instances=input_instances)


@external
@view
def verifier_of(model_id: uint256) -> (address, uint256):
    """
    @notice A zk model's (verifier, input instance count); the verifier is empty when
            none is set.
    """
    v: Verifier = self._verifiers[model_id]
    return (v.verifier, v.input_instances)


@external
@view
def model_cid(model_id: uint256) -> Bytes[MAX_CID]:
    """
    @notice The binary CIDv1 of the model file: what an execution trace starts from.
    """
    return self.models[model_id].model_cid


@external
@view
def terms(model_id: uint256) -> (address, uint256, uint256, bool):
    """
    @notice What the market needs to price a job, without copying the CIDs:
            (owner, fee, modes, deprecated). The owner is empty for an unknown id.
    """
    return (
        self.models[model_id].owner,
        self.models[model_id].fee,
        self.models[model_id].modes,
        self.models[model_id].deprecated,
    )
