"""DeadlineWheel: coarse request deadlines fire once, never early, and not after cancel."""

from __future__ import annotations

import asyncio

from sofamesh.core.net.timers import TICK_S, DeadlineWheel, wheel_for


class Owner:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fired_at: list[float] = []

    def on_deadline(self) -> None:
        self.fired_at.append(self.loop.time())


def test_a_deadline_fires_once_not_before_it_and_within_one_tick() -> None:
    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(loop)
        owner = Owner(loop)
        deadline = loop.time() + 0.03
        wheel.arm(owner, deadline)
        await asyncio.sleep(0.03 + 3 * TICK_S)
        return deadline, owner.fired_at

    deadline, fired = asyncio.run(asyncio.wait_for(main(), 5))
    assert len(fired) == 1
    assert deadline <= fired[0] < deadline + TICK_S + 0.02


def test_a_cancelled_deadline_never_fires_while_its_neighbour_in_the_same_tick_does() -> None:
    async def main() -> tuple[list[float], list[float]]:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(loop)
        kept, cancelled = Owner(loop), Owner(loop)
        deadline = loop.time() + 0.02
        wheel.arm(kept, deadline)
        key = wheel.arm(cancelled, deadline)
        wheel.cancel(cancelled, key)
        await asyncio.sleep(0.02 + 3 * TICK_S)
        return kept.fired_at, cancelled.fired_at

    kept, cancelled = asyncio.run(asyncio.wait_for(main(), 5))
    assert len(kept) == 1
    assert cancelled == []


def test_each_loop_gets_its_own_wheel() -> None:
    one, two = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert wheel_for(one) is wheel_for(one)
        assert wheel_for(one) is not wheel_for(two)
        assert wheel_for(two).loop is two
    finally:
        one.close()
        two.close()


def test_deadlines_armed_across_ticks_and_cancelled_out_of_order_fire_exactly_once_each() -> None:
    # The wheel remembers the slot armed last; arming in other ticks, cancelling in an older one and
    # arming again after a tick fired must each reach the right slot.
    async def main() -> tuple[list[list[float]], list[float]]:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(loop)
        owners = [Owner(loop) for _ in range(6)]
        now = loop.time()
        deadlines = [now + 0.02, now + 0.02, now + 0.05, now + 0.02, now + 0.05, now + 0.08]
        keys = [wheel.arm(o, d) for o, d in zip(owners, deadlines, strict=True)]
        wheel.cancel(owners[1], keys[1])  # an older tick than the one armed last
        wheel.cancel(owners[4], keys[4])
        await asyncio.sleep(0.03 + 2 * TICK_S)  # the first tick fired
        late = Owner(loop)
        again = loop.time() + 0.02
        wheel.cancel(late, wheel.arm(late, again))
        wheel.arm(late, again)
        await asyncio.sleep(0.08 + 3 * TICK_S)
        return [o.fired_at for o in owners], [again, *late.fired_at]

    fired, late = asyncio.run(asyncio.wait_for(main(), 5))
    assert [len(f) for f in fired] == [1, 0, 1, 1, 0, 1]
    assert len(late) == 2 and late[1] >= late[0]
