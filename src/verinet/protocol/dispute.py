"""The dispute game's rules as pure functions: the Python twin of DisputeGame.vy.

A claim over a traced run of N ops (`verinet.protocol.trace`) is disputed over the links::

    h_0                       initial_link(model_cid, input_hash), computed on chain: agreed
    h_i = H(h_{i-1} ‖ H_i)    i = 1..N, H_i the hash of op i's outputs
    h_{N+1} = H(h_N ‖ output_hash)       the OUTPUTS step: the "top", what a challenger disputes

A signed job (no trace) is the case N = 0: its top is H(h_0 ‖ output_hash) and its one step
runs the whole model. Bisection keeps an agreed link `lo` and a disputed link `hi`, starting at
0 and N+1. While ``hi - lo > 1`` the defender posts its link at ``mid = (lo + hi) // 2`` and the
challenger agrees (``lo = mid``) or disagrees (``hi = mid``). Then the defender must post H_hi
with ``H(link_lo ‖ H_hi) == link_hi``, and a committee judges whether H_hi is step hi's correct
result given the agreed prefix.

A game takes between floor(log2(N+1)) and `rounds` = ceil(log2(N+1)) rounds: the halves of an
odd interval differ by one, so which half the answers pick decides the count; deadlines must
budget for the ceiling.

No I/O, no clocks, no logging. A move the rules do not allow raises `ValueError` (this package
imports nothing of Verinet's outside `verinet.types` and itself).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

from verinet.protocol.trace import next_link
from verinet.protocol.types import BPS, ZERO_HASH
from verinet.types import Hash32


def ensure(condition: bool, error: Exception) -> None:
    """Raise `error` unless `condition` holds (an `assert` would vanish under ``python -O``)."""
    if not condition:
        raise error


def _is_hash(value: bytes | None) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def midpoint(lo: int, hi: int) -> int:
    """The link the defender posts next: ``(lo + hi) // 2``, strictly between lo and hi."""
    ensure(lo >= 0 and hi - lo >= 2, ValueError(f"no link lies strictly between {lo} and {hi}"))
    return (lo + hi) // 2


def rounds(ops: int) -> int:
    """ceil(log2(N + 1)) for a claim over N ops: the most bisection rounds a game can take."""
    ensure(ops >= 0, ValueError(f"a claim covers zero or more ops, not {ops}"))
    return ops.bit_length()  # ceil(log2(L)) == (L - 1).bit_length() for L = N + 1 >= 1


def top_link(final: Hash32, output_hash: Hash32) -> Hash32:
    """h_{N+1} = H(h_N ‖ output_hash): the link the OUTPUTS step ends in."""
    ensure(_is_hash(final) and _is_hash(output_hash), ValueError("links are 32-byte hashes"))
    return next_link(final, output_hash)


@dataclass(frozen=True, slots=True)
class Bisection:
    """A bisection between link `lo` (agreed, `lo_link`) and link `hi` (disputed, `hi_link`).

    `posted` is the defender's link at `mid` while it awaits the challenger's answer.
    """

    lo: int
    hi: int
    lo_link: Hash32
    hi_link: Hash32
    posted: Hash32 | None = None
    played: int = 0
    """Rounds answered so far."""

    @property
    def done(self) -> bool:
        """True once the dispute is down to one step: ``hi == lo + 1``."""
        return self.hi - self.lo == 1

    @property
    def mid(self) -> int:
        return midpoint(self.lo, self.hi)

    @property
    def step(self) -> int:
        """The disputed step (1..N+1), once `done`."""
        ensure(self.done, ValueError(f"the bisection is still open between {self.lo}, {self.hi}"))
        return self.hi


def open_bisection(ops: int, initial: Hash32, top: Hash32) -> Bisection:
    """The game over a claim of `ops` ops: h_0 (`initial`) agreed, h_{N+1} (`top`) disputed."""
    ensure(ops >= 0, ValueError(f"a claim covers zero or more ops, not {ops}"))
    ensure(_is_hash(initial) and _is_hash(top), ValueError("links are 32-byte hashes"))
    return Bisection(lo=0, hi=ops + 1, lo_link=initial, hi_link=top)


def post_link(state: Bisection, link: Hash32) -> Bisection:
    """The defender posts its link at `state.mid`."""
    ensure(not state.done, ValueError("the bisection is over: post the step's op hash instead"))
    ensure(state.posted is None, ValueError(f"link {state.mid} is posted already"))
    ensure(_is_hash(link), ValueError("a link is a 32-byte hash"))
    ensure(link != ZERO_HASH, ValueError("a posted link is never zero (the contract refuses it)"))
    return replace(state, posted=link)


def next_bisection_step(state: Bisection, agree: bool) -> Bisection:
    """The challenger's answer to the posted link: agreeing moves `lo` up to mid, disagreeing
    moves `hi` down to it."""
    ensure(not state.done, ValueError("the bisection is over: no answer is due"))
    ensure(state.posted is not None, ValueError(f"the defender has not posted link {state.mid}"))
    mid, posted = state.mid, cast(Hash32, state.posted)
    if agree:
        return replace(state, lo=mid, lo_link=posted, posted=None, played=state.played + 1)
    return replace(state, hi=mid, hi_link=posted, posted=None, played=state.played + 1)


def final_step_holds(state: Bisection, op_hash: Hash32) -> bool:
    """Whether the defender's H_step links the agreed link to the disputed one: the on-chain
    check before the committee judges the step."""
    ensure(state.done, ValueError("the bisection is still open: no step is disputed yet"))
    return _is_hash(op_hash) and next_link(state.lo_link, op_hash) == state.hi_link


def deterrence_holds(p_bps: int, slash: int, forfeited_fee: int, cost_saved: int) -> bool:
    """The audit condition p * (slash + forfeited fee) > cost saved by cheating, with the audit
    probability p in basis points (exact integer arithmetic)."""
    ensure(0 <= p_bps <= BPS, ValueError(f"p_bps must be in 0..{BPS}, not {p_bps}"))
    ensure(
        min(slash, forfeited_fee, cost_saved) >= 0,
        ValueError("slash, forfeited fee and cost saved are amounts, never negative"),
    )
    return p_bps * (slash + forfeited_fee) > cost_saved * BPS
