"""Pacing rules: unit cases, and a property that no window at the receiving side ever exceeds a limit."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import max_in_window
from ultra_signals.transport.telegram.pacing import Pacer, PacingRules, is_group

#: Float rounding of sums of seconds (1e-16 s in practice), not a timing tolerance.
EPS = 1e-9


def test_group_ids_are_negative() -> None:
    assert is_group("-1001234567890")
    assert not is_group("123456")


def test_first_send_is_free_and_the_chat_waits_an_interval_after_the_answer() -> None:
    p = Pacer(PacingRules())
    assert p.wait("1", 100.0) == 0
    tok = p.start("1", 100.0)
    assert p.wait("1", 100.2) == math.inf  # still in flight: no answer yet
    p.finish(tok, 100.3)
    assert p.wait("1", 100.3) == 1.0
    assert p.wait("1", 101.3) == 0
    assert p.wait("2", 100.3) == 0  # another chat is not held


def test_group_limit_per_minute() -> None:
    p = Pacer(PacingRules(per_chat_interval_s=0, group_limit=20, group_window_s=60, global_limit=1000))
    for i in range(20):
        assert p.wait("-5", float(i)) == 0
        p.finish(p.start("-5", float(i)), float(i))
    assert p.wait("-5", 20.0) == 40.0  # the first of the 20 expires 60 s after its answer
    assert p.wait("7", 20.0) == 0  # a private chat is not under the group rule


def test_global_limit_counts_in_flight_sends_of_every_chat() -> None:
    p = Pacer(PacingRules(per_chat_interval_s=0, global_limit=3, global_window_s=1.0))
    toks = [p.start(str(c), 0.0) for c in range(3)]
    assert p.wait("9", 0.0) == math.inf
    p.finish(toks[0], 0.5)
    assert p.wait("9", 0.5) == 1.0
    assert p.wait("9", 1.5) == 0


def test_retry_after_blocks_only_that_chat() -> None:
    p = Pacer(PacingRules())
    p.block("1", 50.0)
    assert p.wait("1", 45.0) == 5.0
    assert p.wait("2", 45.0) == 0
    assert p.wait("1", 50.0) == 0


RULES = PacingRules(per_chat_interval_s=1.0, group_limit=3, group_window_s=5.0, global_limit=4, global_window_s=1.0)
CHATS = ["1", "2", "3", "-10", "-20"]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_no_window_at_the_receiver_exceeds_a_limit(data: st.DataObject) -> None:
    """Whatever the network delay of each request, receipts (anywhere between start and answer) obey the rules."""
    p = Pacer(RULES)
    now = 0.0
    in_flight: dict[int, tuple[str, float]] = {}
    receipts: dict[str, list[float]] = {c: [] for c in CHATS}
    for _ in range(data.draw(st.integers(10, 80))):
        action = data.draw(st.sampled_from(["send", "send", "finish", "advance"]))
        if action == "send":
            chat = data.draw(st.sampled_from(CHATS))
            if any(c == chat for c, _ in in_flight.values()):
                continue  # one message at a time per chat, as the notifier sends them
            for _ in range(10):
                w = p.wait(chat, now)
                if w <= 0 or w == math.inf:
                    break
                now += w
            if p.wait(chat, now) > 0:
                continue
            in_flight[p.start(chat, now)] = (chat, now)
        elif action == "finish" and in_flight:
            tok = data.draw(st.sampled_from(sorted(in_flight)))
            chat, start = in_flight.pop(tok)
            now += data.draw(st.floats(0.0, 2.0))
            p.finish(tok, now)
            receipts[chat].append(data.draw(st.floats(start, now)))
        else:
            now += data.draw(st.floats(0.0, 3.0))
    for tok, (chat, start) in list(in_flight.items()):
        p.finish(tok, now)
        receipts[chat].append(start)
    for chat, times in receipts.items():
        times.sort()
        assert all(b - a >= RULES.per_chat_interval_s - EPS for a, b in itertools.pairwise(times)), chat
        if is_group(chat):
            assert max_in_window(times, RULES.group_window_s, EPS) <= RULES.group_limit
    everything = [t for ts in receipts.values() for t in ts]
    assert max_in_window(everything, RULES.global_window_s, EPS) <= RULES.global_limit
