"""The ASR scheduling policy, driven with synthetic states (no Redis, no model)."""

from __future__ import annotations

from shared.schemas import AsrJob
from workers.asr_policy import (
    PARTIALS_PER_READ,
    DecodeBatch,
    DecodeFinal,
    DecodePartial,
    DropPartials,
    Final,
    Marks,
    Partial,
    Read,
    State,
    Stop,
    next_action,
)


def final(n: int) -> Final:
    return Final(f"{n}-0".encode(), {b"d": b""})


def partial(n: int, sid: str = "s", segment: int = 1, rev: int = 1) -> Partial:
    job = AsrJob(session_id=sid, segment=segment, start=0, end=1, pcm=b"", final=False, rev=rev)
    return Partial(f"{n}-1".encode(), job)


def fresh(batch_size: int = 1, **kw) -> State:
    return State(batch_size=batch_size, fresh=True, **kw)


def test_nothing_held_after_a_decode_looks_at_the_finals_first_without_blocking() -> None:
    assert next_action(State(batch_size=8)) == Read(finals=8)


def test_nothing_held_and_fresh_blocks_on_both_streams() -> None:
    assert next_action(fresh(8)) == Read(finals=8, partials=PARTIALS_PER_READ, block=True)


def test_finals_before_partials_oldest_first() -> None:
    state = fresh(partials=[partial(0)], finals=[final(1), final(2)])
    assert next_action(state) == DecodeFinal(final(1))
    state.take(next_action(state))
    assert next_action(state) == DecodeFinal(final(2))


def test_a_partial_waits_for_a_look_at_the_finals_after_each_decode() -> None:
    state = fresh(partials=[partial(0)], finals=[final(1)])
    action = next_action(state)
    state.take(action)
    assert not state.fresh
    assert next_action(state) == Read(finals=1)  # a final may have come during the decode
    state.read([final(3)], [], {"s": Marks()})
    assert next_action(state) == DecodeFinal(final(3))
    state.take(next_action(state))
    state.read([], [], {"s": Marks()})
    assert next_action(state) == DecodePartial(partial(0))


def test_finals_are_batched_up_to_the_batch_size_in_arrival_order() -> None:
    state = fresh(3, finals=[final(i) for i in range(5)])
    assert next_action(state) == DecodeBatch((final(0), final(1), final(2)))
    state.take(next_action(state))
    state.fresh = True
    assert next_action(state) == DecodeBatch((final(3), final(4)))


def test_finals_held_after_a_decode_are_topped_up_before_the_next_batch() -> None:
    state = fresh(8, finals=[final(i) for i in range(10)])
    state.take(next_action(state))  # the first 8
    assert next_action(state) == Read(finals=6)
    state.read([final(10), final(11)], [], {})
    assert next_action(state) == DecodeBatch((final(8), final(9), final(10), final(11)))


def test_one_final_on_cpu_is_decoded_at_once() -> None:
    state = State(batch_size=1, finals=[final(0)])
    assert next_action(state) == DecodeFinal(final(0))


def test_a_partial_superseded_by_a_newer_one_held_here_is_dropped_unread() -> None:
    older, newer, other = partial(0, rev=1), partial(1, rev=2), partial(2, sid="o", rev=1)
    state = fresh(partials=[older, newer, other])
    assert next_action(state) == DropPartials((older,))
    state.take(next_action(state))
    assert next_action(state) == DecodePartial(newer)
    state.take(next_action(state))
    assert state.partials == [other]


def test_a_partial_superseded_by_the_session_hash_is_dropped() -> None:
    old, cur = partial(0, sid="a", rev=3), partial(1, sid="b", segment=2, rev=1)
    marks = {"a": Marks(partial_seg=1, partial_rev=4), "b": Marks(partial_seg=2, partial_rev=1)}
    assert next_action(fresh(partials=[old, cur], marks=marks)) == DropPartials((old,))
    # a later segment supersedes every revision of an earlier one
    marks = {"a": Marks(partial_seg=2, partial_rev=1)}
    assert next_action(fresh(partials=[old], marks=marks)) == DropPartials((old,))


def test_a_partial_of_a_segment_whose_final_exists_is_dropped() -> None:
    p = partial(0, segment=1, rev=9)
    assert next_action(fresh(partials=[p], marks={"s": Marks(final_seg=1)})) == DropPartials((p,))
    assert next_action(fresh(partials=[p], marks={"s": Marks(final_seg=0)})) == DecodePartial(p)


def test_the_newest_partial_is_current() -> None:
    p = partial(0, segment=1, rev=2)
    marks = {"s": Marks(final_seg=0, partial_seg=1, partial_rev=2)}
    assert next_action(fresh(partials=[p], marks=marks)) == DecodePartial(p)


def test_closing_decodes_the_finals_read_drops_the_partials_then_stops() -> None:
    state = State(batch_size=8, finals=[final(0)], partials=[partial(1)], closing=True)
    assert next_action(state) == DecodeFinal(final(0))  # no top-up read while closing
    state.take(next_action(state))
    assert next_action(state) == DropPartials((partial(1),))
    state.take(next_action(state))
    assert next_action(state) == Stop()


def test_read_replaces_the_marks_and_reports_the_sessions_held() -> None:
    state = State()
    state.read([], [partial(0, sid="a"), partial(1, sid="b")], {"a": Marks(final_seg=0)})
    assert state.sessions() == {"a", "b"} and state.fresh
    state.read([], [], {"b": Marks()})
    assert state.marks == {"b": Marks()}


def test_partials_take_at_most_their_share_of_the_worker() -> None:
    """After a partial of 0.4 s at share 0.5 the next waits 0.4 s, on finals only; a final in
    that time is decoded at once; after it the partial starts."""
    state = fresh(partials=[partial(0, "a"), partial(1, "b")], partial_share=0.5)
    assert next_action(state, now=10.0) == DecodePartial(partial(0, "a"))
    state.take(next_action(state, now=10.0))
    state.partial_decoded(10.0, 10.4)
    state.read([], [], {"b": Marks()})
    assert next_action(state, now=10.5) == Read(finals=1, block=True, block_ms=300)
    state.read([final(2)], [], {"b": Marks()})
    assert next_action(state, now=10.6) == DecodeFinal(final(2))
    state.take(next_action(state, now=10.6))
    state.read([], [], {"b": Marks()})
    assert next_action(state, now=10.7) == Read(finals=1, block=True, block_ms=100)
    assert next_action(state, now=10.8) == DecodePartial(partial(1, "b"))


def test_a_share_of_one_never_holds_a_partial_back_and_stale_ones_still_go() -> None:
    state = fresh(partials=[partial(0, rev=1)], partial_share=1.0)
    state.partial_decoded(10.0, 10.4)
    assert next_action(state, now=10.4) == DecodePartial(partial(0, rev=1))
    state = fresh(partials=[partial(0, rev=1), partial(1, rev=2)], partial_share=0.2)
    state.partial_decoded(10.0, 10.4)  # held back until 12.0, but the superseded one goes now
    assert next_action(state, now=10.5) == DropPartials((partial(0, rev=1),))


def test_a_finalize_goes_before_speculations_and_ordinary_finals() -> None:
    from workers.asr_policy import ORDINARY, SPECULATIVE, URGENT

    state = State()
    spec = Final(b"1-0", {}, SPECULATIVE)
    ordinary = Final(b"2-0", {}, ORDINARY)
    urgent = Final(b"3-0", {}, URGENT)
    state.read([spec, ordinary], [], {})
    state.read([urgent], [], {})
    order = []
    while state.finals:
        action = next_action(state)
        assert isinstance(action, DecodeFinal)
        order.append(action.final.entry_id)
        state.take(action)
        state.fresh = True
    assert order == [b"3-0", b"2-0", b"1-0"]
