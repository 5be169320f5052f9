"""The dispute game's pure rules: midpoints, round counts, the bisection and deterrence."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verinet.protocol.dispute import (
    Bisection,
    deterrence_holds,
    ensure,
    final_step_holds,
    midpoint,
    next_bisection_step,
    open_bisection,
    post_link,
    rounds,
    top_link,
)
from verinet.protocol.trace import hash_chain
from verinet.types import Hash32


def _h(label: str) -> Hash32:
    return Hash32(hashlib.sha256(label.encode()).digest())


def _parties(ops: int, first_bad: int) -> tuple[list[Hash32], list[Hash32]]:
    """Links h_0..h_{N+1} of a defender and a watcher that agree on h_0..h_{first_bad - 1}."""
    honest = [_h(f"op{i}") for i in range(1, ops + 2)]  # H_1..H_N, then the output hash
    forged = [*honest[: first_bad - 1], *(_h(f"bad{i}") for i in range(first_bad, ops + 2))]
    h0 = _h("h0")
    return hash_chain(h0, forged), hash_chain(h0, honest)


def _play(defender: list[Hash32], watcher: list[Hash32]) -> Bisection:
    state = open_bisection(len(defender) - 2, defender[0], defender[-1])
    while not state.done:
        mid = state.mid
        state = post_link(state, defender[mid])
        state = next_bisection_step(state, state.posted == watcher[mid])
    return state


@pytest.mark.parametrize(
    ("ops", "expected"),
    [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (6, 3), (7, 3), (8, 4), (9, 4), (1023, 10)],
)
def test_rounds_table(ops: int, expected: int) -> None:
    assert rounds(ops) == expected


@given(st.integers(min_value=0, max_value=10**6))
def test_rounds_is_ceil_log2_of_the_links_after_h0(ops: int) -> None:
    assert rounds(ops) == math.ceil(math.log2(ops + 1))


def test_rounds_and_midpoint_refuse_what_cannot_be() -> None:
    with pytest.raises(ValueError, match="zero or more"):
        rounds(-1)
    for lo, hi in [(3, 4), (3, 3), (5, 2), (-2, 4)]:
        with pytest.raises(ValueError, match="strictly between"):
            midpoint(lo, hi)
    assert midpoint(0, 7) == 3
    assert midpoint(3, 5) == 4


def test_top_link_is_sha256_of_the_final_link_and_output_hash() -> None:
    final, output = _h("final"), _h("out")
    assert top_link(final, output) == hashlib.sha256(final + output).digest()
    with pytest.raises(ValueError, match="32-byte"):
        top_link(final, Hash32(b"short"))


def test_ensure_raises_the_given_error() -> None:
    ensure(True, ValueError("never"))
    with pytest.raises(KeyError):
        ensure(False, KeyError("this one"))


@given(st.integers(min_value=0, max_value=300), st.data())
def test_bisection_finds_the_first_differing_step(ops: int, data: st.DataObject) -> None:
    first_bad = data.draw(st.integers(min_value=1, max_value=ops + 1))
    defender, watcher = _parties(ops, first_bad)
    game = _play(defender, watcher)
    assert game.step == first_bad
    assert game.lo_link == watcher[first_bad - 1] == defender[first_bad - 1]
    assert game.hi_link == defender[first_bad]
    # floor(log2(N+1)) <= rounds played <= ceil(log2(N+1)): an odd interval's halves differ.
    assert (ops + 1).bit_length() - 1 <= game.played <= rounds(ops)
    # The defender's true H_step passes the on-chain link check; anything else does not.
    bad = _h(f"bad{first_bad}")
    assert final_step_holds(game, bad)
    assert not final_step_holds(game, _h(f"op{first_bad}"))


@pytest.mark.parametrize("ops", [0, 1, 2, 5, 6, 9, 16, 33])
def test_the_longest_game_takes_exactly_rounds(ops: int) -> None:
    played = [_play(*_parties(ops, bad)).played for bad in range(1, ops + 2)]
    assert max(played) == rounds(ops)
    if (ops + 1) & ops == 0:  # N+1 a power of two: every game takes exactly rounds(N)
        assert set(played) == {rounds(ops)}


def test_a_signed_claim_is_one_step_with_no_rounds() -> None:
    h0, out = _h("h0"), _h("out")
    game = open_bisection(0, h0, top_link(h0, out))
    assert game.done and game.step == 1 and game.played == 0
    assert final_step_holds(game, out)
    assert not final_step_holds(game, _h("other"))


@given(st.integers(min_value=1, max_value=200), st.lists(st.booleans(), max_size=12))
def test_bisection_state_invariants(ops: int, answers: list[bool]) -> None:
    state = open_bisection(ops, _h("h0"), _h("top"))
    for round_, agree in enumerate(answers):
        if state.done:
            with pytest.raises(ValueError, match="over"):
                post_link(state, _h("late"))
            with pytest.raises(ValueError, match="over"):
                next_bisection_step(state, agree)
            break
        with pytest.raises(ValueError, match="not posted"):
            next_bisection_step(state, agree)
        before = state
        posted = post_link(state, _h(f"mid{round_}"))
        with pytest.raises(ValueError, match="posted already"):
            post_link(posted, _h("again"))
        state = next_bisection_step(posted, agree)
        assert before.posted is None and posted.posted is not None  # states are values
        assert 0 <= state.lo < state.hi <= ops + 1
        assert state.hi - state.lo < before.hi - before.lo
        assert (state.lo_link if agree else state.hi_link) == posted.posted
        assert state.played == before.played + 1 <= rounds(ops)
        assert state.posted is None


def test_open_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="zero or more"):
        open_bisection(-1, _h("a"), _h("b"))
    with pytest.raises(ValueError, match="32-byte"):
        open_bisection(3, Hash32(b""), _h("b"))
    with pytest.raises(ValueError, match="32-byte"):
        post_link(open_bisection(3, _h("a"), _h("b")), Hash32(b"x" * 31))
    with pytest.raises(ValueError, match="never zero"):
        post_link(open_bisection(3, _h("a"), _h("b")), Hash32(bytes(32)))
    with pytest.raises(ValueError, match="still open"):
        final_step_holds(open_bisection(3, _h("a"), _h("b")), _h("c"))
    with pytest.raises(ValueError, match="still open"):
        _ = open_bisection(3, _h("a"), _h("b")).step


@pytest.mark.parametrize(
    ("p_bps", "slash", "fee", "saved", "holds"),
    [
        (1_000, 900, 100, 99, True),  # 10% of 1000 = 100 > 99
        (1_000, 900, 100, 100, False),  # equal is not deterrence
        (10_000, 5, 0, 4, True),
        (0, 10**30, 10**30, 0, False),  # never audited: nothing deters
        (1, 10_001, 0, 1, True),  # 0.01% of 10001 is just over one unit saved
        (1, 10_000, 0, 1, False),  # exactly one unit: not enough
    ],
)
def test_deterrence_examples(p_bps: int, slash: int, fee: int, saved: int, holds: bool) -> None:
    assert deterrence_holds(p_bps, slash, fee, saved) is holds


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10**24),
    st.integers(min_value=0, max_value=10**24),
    st.integers(min_value=0, max_value=10**24),
)
def test_deterrence_is_the_exact_inequality(p: int, slash: int, fee: int, saved: int) -> None:
    assert deterrence_holds(p, slash, fee, saved) is (Fraction(p, 10_000) * (slash + fee) > saved)
    if deterrence_holds(p, slash, fee, saved):
        assert deterrence_holds(min(p + 1, 10_000), slash + 1, fee, saved)


@pytest.mark.parametrize(
    "args", [(-1, 1, 1, 1), (10_001, 1, 1, 1), (5, -1, 0, 0), (5, 0, -1, 0), (5, 0, 0, -1)]
)
def test_deterrence_refuses_bad_parameters(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        deterrence_holds(*args)
