"""Simulation time: nodes in sim mode follow /clock for now(), stamps and timers."""

from __future__ import annotations

from fleetbus.bus.config import BusConfig
from fleetbus.messages.system import Clock
from tests.helpers import barrier, run_on, wait_until
from tests.procs import Text

MS = 1_000_000


def _timer_node(bus, name, period_s, clock="sim"):
    def setup(node):
        node.fired = []
        node.timer(period_s, lambda: node.fired.append(node.now_ns()))

    return bus.node(name, setup, config=BusConfig.from_env(clock=clock))


def _clock_source(bus):
    source = bus.node("simulator", lambda n: setattr(n, "pub", n.publisher("/clock", Clock)))
    return source


def _tick(source, stamp_ns):
    run_on(source, lambda: source.pub.publish(Clock(stamp_ns=stamp_ns)))


def test_sim_timer_fires_once_per_period_of_sim_time(bus):
    sim = _timer_node(bus, "sim", 0.1)
    source = _clock_source(bus)
    wait_until(lambda: source.pub.subscribers >= 1, what="the sim node to subscribe /clock")
    for k in range(101):  # 0 … 1.0 s in 10 ms steps
        stamp = k * 10 * MS
        _tick(source, stamp)
        # /clock is conflated: wait until this very stamp arrived before sending the next.
        wait_until(lambda s=stamp: sim.now_ns() == s, what=f"sim time {stamp} ns",
                   interval=0.001)
        barrier(sim)  # timers due at this time have run
        assert len(sim.fired) == k // 10, (k, sim.fired)
    assert sim.fired == [i * 100 * MS for i in range(1, 11)]
    assert sim.now_ns() == 1000 * MS
    assert abs(sim.now() - 1.0) < 1e-9
    assert sim.counters["clock_backwards"] == 0


def test_sim_timer_never_fires_without_clock(bus):
    sim = _timer_node(bus, "sim", 0.01)
    wall = _timer_node(bus, "wall", 0.01, clock="wall")
    wait_until(lambda: len(wall.fired) >= 30, what="30 periods of wall time")
    barrier(sim)
    assert sim.fired == []
    assert sim.now_ns() == 0


def test_clock_going_backwards_is_ignored_and_counted(bus):
    sim = _timer_node(bus, "sim", 1.0)
    source = _clock_source(bus)
    wait_until(lambda: source.pub.subscribers >= 1, what="the sim node to subscribe /clock")
    _tick(source, 500 * MS)
    wait_until(lambda: sim.now_ns() == 500 * MS, what="sim time 0.5 s")
    _tick(source, 200 * MS)
    wait_until(lambda: sim.counters["clock_backwards"] == 1, what="the backwards step")
    assert sim.now_ns() == 500 * MS
    _tick(source, 1500 * MS)
    wait_until(lambda: sim.fired, what="the 1 s timer")
    assert sim.fired == [1500 * MS]


def test_sim_clock_in_another_process(bus):
    """A talker process with FLEETBUS_CLOCK=sim publishes once per 0.1 s of sim time,
    and stamps its messages with sim time."""
    got = []

    def setup(node):
        node.sub = node.subscribe("/sim_chatter", Text,
                                  lambda m: got.append((m.n, node.sub.last_header)))

    listener = bus.node("listener", setup)
    source = _clock_source(bus)
    bus.spawn("talker", "--topic", "/sim_chatter", "--rate", "10",
              env={"FLEETBUS_CLOCK": "sim"})
    wait_until(lambda: source.pub.subscribers >= 1 and listener.sub.publishers >= 1,
               what="the talker to subscribe /clock and the listener to connect")
    for k in range(1, 51):  # up to 0.5 s
        _tick(source, k * 10 * MS)
        if k % 10 == 0:  # a timer period ends: its message must come, stamped k * 10 ms
            wait_until(lambda k=k: len(got) >= k // 10, what=f"message {k // 10}")
    barrier(listener)
    assert [n for n, _ in got] == [0, 1, 2, 3, 4]
    assert [header.source_stamp_ns for _, header in got] == [100 * MS * i for i in range(1, 6)]


def test_a_step_s_messages_all_arrive_before_its_timers_and_none_of_the_next(bus):
    """A simulator publishes each step's readings on three topics, then the step's
    /clock, back to back. The sim-time node reads each topic on a socket of its own, so
    without ordering the /clock can overtake a reading, or the next step's readings the
    timer: at every timer, the node must have exactly the readings stamped up to now."""
    steps, topics = 300, ("/a", "/b", "/c")

    def source_setup(node):
        node.pubs = [node.publisher(t, Text) for t in topics]
        node.clock_pub = node.publisher("/clock", Clock)

    source = bus.node("simulator", source_setup)

    def setup(node):
        node.got = {t: [] for t in topics}
        node.seen_at_timer = []
        for t in topics:
            node.subscribe(t, Text, lambda m, t=t: node.got[t].append(m.n), depth=10000)
        node.timer(0.01, lambda: node.seen_at_timer.append(
            (node.now_ns(), tuple(max(node.got[t], default=-1) for t in topics))))

    sim = bus.node("follower", setup, config=BusConfig.from_env(clock="sim"))
    wait_until(lambda: all(p.subscribers >= 1 for p in source.pubs)
               and source.clock_pub.subscribers >= 1 + len(topics), what="the follower's links")

    def publish_all():
        for k in range(1, steps + 1):
            for pub in source.pubs:
                for _ in range(5):  # several readings per step
                    pub.publish(Text(n=k))
            source.clock_pub.publish(Clock(stamp_ns=k * 10 * MS))

    run_on(source, publish_all)
    wait_until(lambda: sim.now_ns() == steps * 10 * MS, what="the last step")
    barrier(sim)
    assert [t for t, _ in sim.seen_at_timer] == [k * 10 * MS for k in range(1, steps + 1)]
    for stamp, latest in sim.seen_at_timer:
        k = stamp // (10 * MS)
        assert latest == (k, k, k), f"at step {k} the timer saw readings up to {latest}"
