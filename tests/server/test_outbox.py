"""The outbox's rules with plain calls and lists: no sockets, no clock, no event loop."""

from ticker import feed
from ticker.server.outbox import Outbox, Route

W = feed.WHOLE
BUFFER = 1_000


def box(rate: float = 10.0, live: bool = True, max_urgent: int = 100) -> Outbox:
    b = Outbox(rate, BUFFER, max_urgent)
    b.live = live
    return b


def drain(b: Outbox, now: float = 0.0) -> list[bytes | float]:
    """What the sender sends at `now`, until it is told to wait (the wait ends the list)."""
    out: list[bytes | float] = []
    while (step := b.next_message(now)) is not None:
        out.append(step)
        if not isinstance(step, bytes):
            break
    return out


def test_a_client_that_keeps_up_gets_a_tick_raw_on_its_socket() -> None:
    """Nothing queued, an empty transport: the socket; the floor rises to the tick."""
    b = box()
    assert b.route_tick((5, 0, W), 0.0, buffered=0, closing=False, raw=True) is Route.SOCKET
    assert b.floor == (5, 0, W)


def test_a_transport_holding_bytes_or_no_raw_socket_takes_the_write_itself() -> None:
    """Bytes still buffered, or TLS (no raw socket): written behind them, to the transport."""
    assert box().route((5, 0, W), 10, False, True) is Route.TRANSPORT
    assert box().route((5, 0, W), 0, False, False) is Route.TRANSPORT


def test_a_full_or_closing_connection_gets_nothing_directly() -> None:
    """Over the send buffer, or closing: the message waits in the outbox."""
    assert box().route((5, 0, W), BUFFER + 1, False, True) is Route.QUEUE
    assert box().route((5, 0, W), 0, True, True) is Route.QUEUE


def test_nothing_bypasses_a_client_not_yet_greeted_or_inside_a_send() -> None:
    """Before its snapshot, or while a send is under way, every message queues."""
    assert box(live=False).route(None, 0, False, True) is Route.QUEUE
    b = box()
    b.sending = True
    assert b.route((5, 0, W), 0, False, True) is Route.QUEUE


def test_nothing_bypasses_what_is_already_queued() -> None:
    """A queued milestone or a held tick: a newer message queues behind them."""
    b = box()
    b.offer_urgent((1, 0, 0), b"m")
    assert b.route((2, 0, W), 0, False, True) is Route.QUEUE
    b = box()
    b.offer_tick((1, 0, W), b"t")
    assert b.route(None, 0, False, True) is Route.QUEUE


def test_a_message_at_or_below_the_floor_is_never_sent() -> None:
    """A position already covered is neither routed nor sent; a replay message always is."""
    b = box()
    b.floor = (5, 0, W)
    assert b.route((5, 0, W), 0, False, True) is Route.QUEUE
    b.offer_urgent((4, 0, 0), b"old")
    b.offer_tick((5, 0, W), b"same")
    b.offer_replay(b"replay")
    assert drain(b) == [b"replay"]


def test_ticks_coalesce_to_the_newest() -> None:
    """Three ticks offered before the sender runs: the newest alone is sent."""
    b = box()
    assert [b.offer_tick((k, 0, W), b"t%d" % k) for k in (1, 2, 3)] == [False, True, True]
    assert drain(b) == [b"t3"]
    assert b.floor == (3, 0, W)


def test_milestones_go_first_in_order_then_the_newest_tick() -> None:
    """A tick waiting and two milestones after it: the milestones, then the tick."""
    b = box()
    b.offer_tick((2, 0, W), b"tick")
    b.offer_urgent((1, 0, 0), b"m1")
    b.offer_urgent((1, 0, W), b"m2")
    assert drain(b) == [b"m1", b"m2", b"tick"]


def test_a_replay_message_follows_the_tick_waiting_before_it() -> None:
    """A tick queued for a client goes out before the replay news that came after it."""
    b = box()
    b.offer_tick((5, 0, W), b"tick")
    assert b.offer_replay(b"replay")
    assert b.latest_tick is None
    assert drain(b) == [b"tick", b"replay"]


def test_a_milestone_cuts_through_the_rate_limit() -> None:
    """With the client's rate spent, a milestone goes at once and the tick waits its slot."""
    b = box(rate=0.01)  # a tick slot every 100 s
    b.pace.take(0.0), b.pace.take(0.0)  # the burst spent
    b.offer_tick((1, 0, W), b"tick")
    b.offer_urgent((1, 0, 0), b"milestone")
    sent = drain(b)
    assert sent[0] == b"milestone" and sent[1] == 100.0 and b.latest_tick is not None
    assert drain(b, now=100.0) == [b"tick"]


def test_the_rate_limit_lets_at_most_rate_t_plus_burst_ticks_through() -> None:
    """max_rate 2, a tick offered every 10 ms for 10 s: at most 2 x 10 + 2 are sent."""
    b = box(rate=2.0)
    sent = []
    for k in range(1_000):
        b.offer_tick((k + 1, 0, W), b"t")
        sent += [s for s in drain(b, now=k / 100) if isinstance(s, bytes)]
    assert 18 <= len(sent) <= 2 * 10 + 2


def test_ticks_written_directly_count_against_the_rate() -> None:
    """Direct ticks spend the client's rate: after the burst, the next tick queues."""
    b = box(rate=1.0)
    routes = [b.route_tick((k, 0, W), 0.0, 0, False, True) for k in (1, 2, 3)]
    assert routes == [Route.SOCKET, Route.SOCKET, Route.QUEUE]
    assert b.floor == (2, 0, W)


def test_a_client_with_max_urgent_messages_queued_is_stuck() -> None:
    """The offer past the bound answers False, for milestones and replay messages alike."""
    b = box(max_urgent=2)
    assert [b.offer_urgent((1, 0, k), b"m") for k in range(3)] == [True, True, False]
    b = box(max_urgent=1)
    b.offer_tick((1, 0, W), b"tick")  # the tick and the replay message need two places
    assert not b.offer_replay(b"replay")


def test_clearing_counts_every_message_dropped() -> None:
    """A dropped client's milestones and held tick are counted and forgotten."""
    b = box()
    b.offer_urgent((1, 0, 0), b"m")
    b.offer_tick((1, 0, W), b"t")
    assert b.clear() == 2 and len(b) == 0 and drain(b) == []
