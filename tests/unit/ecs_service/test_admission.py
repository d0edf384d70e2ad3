"""The admission gate: slots, each tenant's share, and a short wait before a refusal."""

from __future__ import annotations

import asyncio
import time

import pytest

from ecs_service.api.admission import UNAUTHENTICATED, AdmissionGate, OverloadedError


async def hold(gate: AdmissionGate, party: str, release: asyncio.Event) -> None:
    async with gate.admitted(party):
        await release.wait()


async def holding(
    gate: AdmissionGate, party: str, count: int, release: asyncio.Event
) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(hold(gate, party, release)) for _ in range(count)]
    await asyncio.sleep(0)
    return tasks


def test_one_tenant_cannot_take_every_slot() -> None:
    async def scenario() -> tuple[int, bool]:
        # Given a gate of 4 slots, and a tenant holding all it may (3)
        gate = AdmissionGate(4, tenant_share=0.75, wait_seconds=0.05)
        release = asyncio.Event()
        tasks = await holding(gate, "noisy", 3, release)

        # When another tenant comes, Then it is admitted at once
        async with gate.admitted("quiet"):
            admitted_quiet = True
        release.set()
        await asyncio.gather(*tasks)
        return gate.tenant_limit, admitted_quiet

    assert asyncio.run(scenario()) == (3, True)


def test_a_request_over_its_tenants_share_is_refused_after_the_short_wait() -> None:
    async def scenario() -> float:
        # Given a tenant holding its whole share
        gate = AdmissionGate(4, tenant_share=0.75, wait_seconds=0.05)
        release = asyncio.Event()
        tasks = await holding(gate, "noisy", 3, release)

        # When it sends one more
        started = time.monotonic()
        with pytest.raises(OverloadedError):
            async with gate.admitted("noisy"):
                pass
        waited = time.monotonic() - started
        release.set()
        await asyncio.gather(*tasks)
        return waited

    # Then it is refused after the wait, not later
    assert 0.04 <= asyncio.run(scenario()) < 0.5


def test_a_freed_slot_goes_to_a_waiter_whose_tenant_is_under_its_share() -> None:
    async def scenario() -> list[str]:
        # Given a full gate: a noisy tenant at its share, a quiet one holding the last slot
        gate = AdmissionGate(4, tenant_share=0.75, wait_seconds=1.0)
        noisy_release, quiet_release = asyncio.Event(), asyncio.Event()
        noisy = await holding(gate, "noisy", 3, noisy_release)
        quiet = await holding(gate, "quiet", 1, quiet_release)
        order: list[str] = []

        async def wait_for_slot(party: str) -> None:
            async with gate.admitted(party):
                order.append(party)

        # When a noisy request waits first, then a quiet one, and the quiet slot frees
        waiters = [asyncio.create_task(wait_for_slot("noisy"))]
        await asyncio.sleep(0)
        waiters.append(asyncio.create_task(wait_for_slot("quiet")))
        await asyncio.sleep(0)
        quiet_release.set()
        await asyncio.gather(*quiet)
        await asyncio.sleep(0.01)
        admitted_first = list(order)
        noisy_release.set()
        await asyncio.gather(*noisy, *waiters)
        return admitted_first

    # Then the quiet waiter gets it, though the noisy one waited longer
    assert asyncio.run(scenario()) == ["quiet"]


def test_unauthenticated_requests_have_a_smaller_share() -> None:
    async def scenario() -> None:
        # Given a gate of 14 slots, 3 of them held by requests whose keys are being read
        gate = AdmissionGate(14, wait_seconds=0.01)
        release = asyncio.Event()
        tasks = await holding(gate, UNAUTHENTICATED, 3, release)

        # Then a fourth such request is refused
        with pytest.raises(OverloadedError):
            async with gate.admitted(UNAUTHENTICATED):
                pass
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_every_slot_is_given_back() -> None:
    async def scenario() -> int:
        gate = AdmissionGate(2, wait_seconds=0.01)
        for _ in range(5):
            with pytest.raises(RuntimeError):
                async with gate.admitted("t"):
                    raise RuntimeError("the route failed")
        return gate.in_flight

    assert asyncio.run(scenario()) == 0


async def flood(gate: AdmissionGate, party: str, clients: int, until: asyncio.Event) -> None:
    """``clients`` callers of ``party``, each sending again as soon as it is answered; an
    admitted request holds its slot for 20 ms."""

    async def client() -> None:
        while not until.is_set():
            try:
                async with gate.admitted(party):
                    await asyncio.sleep(0.02)
            except OverloadedError:
                await asyncio.sleep(0)

    await asyncio.gather(*(client() for _ in range(clients)))


@pytest.mark.parametrize("second_flood", ["tenant-b", UNAUTHENTICATED])
def test_two_floods_cannot_shut_out_a_third_tenant(second_flood: str) -> None:
    async def scenario() -> list[str]:
        # Given a gate of 14 slots, 60 clients of tenant A and 60 of a second party
        # (another tenant, or made-up keys) sending without pause
        gate = AdmissionGate(14, wait_seconds=0.05)
        done = asyncio.Event()
        floods = [
            asyncio.create_task(flood(gate, "tenant-a", 60, done)),
            asyncio.create_task(flood(gate, second_flood, 60, done)),
        ]
        await asyncio.sleep(0.05)

        # When a third tenant sends 30 requests, one at a time
        answers = []
        for _ in range(30):
            try:
                async with gate.admitted("tenant-c"):
                    await asyncio.sleep(0.002)
                answers.append("admitted")
            except OverloadedError:
                answers.append("overloaded")
        done.set()
        await asyncio.gather(*floods)
        return answers

    # Then every one of them is admitted
    assert asyncio.run(scenario()) == ["admitted"] * 30


def test_a_party_holding_no_slot_gets_the_next_free_one_ahead_of_a_busy_partys_waiter() -> None:
    async def scenario() -> list[str]:
        # Given a full gate of 4 slots, 2 held by a busy tenant and 2 by another
        gate = AdmissionGate(4, wait_seconds=1.0)
        busy_release, other_release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        busy = await holding(gate, "busy", 2, busy_release)
        other = [
            *await holding(gate, "other", 1, other_release),
            *await holding(gate, "other", 1, done),
        ]
        order: list[str] = []

        async def wait_for_slot(party: str) -> None:
            async with gate.admitted(party):
                order.append(party)
                await done.wait()

        # When the busy tenant waits for a third slot, then a newcomer comes, and one of
        # the other tenant's slots frees
        waiters = [asyncio.create_task(wait_for_slot("busy"))]
        await asyncio.sleep(0)
        waiters.append(asyncio.create_task(wait_for_slot("newcomer")))
        await asyncio.sleep(0)
        other_release.set()
        await asyncio.sleep(0.01)
        admitted_first = list(order)
        busy_release.set()
        done.set()
        await asyncio.gather(*busy, *other, *waiters)
        return admitted_first

    # Then the newcomer has it, though the busy tenant waited longer
    assert asyncio.run(scenario()) == ["newcomer"]


def test_a_freed_slot_goes_to_the_waiter_whose_party_holds_fewest() -> None:
    async def scenario() -> list[str]:
        # Given a full gate of 14 slots (3 reserved): tenant A holds 8, B 2, C 4
        gate = AdmissionGate(14, wait_seconds=1.0)
        releases = {party: asyncio.Event() for party in ("a", "b", "c")}
        held = [
            *await holding(gate, "a", 8, releases["a"]),
            *await holding(gate, "b", 2, releases["b"]),
            *await holding(gate, "c", 4, releases["c"]),
        ]
        order: list[str] = []

        async def wait_for_slot(party: str) -> None:
            async with gate.admitted(party):
                order.append(party)
                await releases[party].wait()

        # When A waits for a slot, then B, and C's four slots free
        waiters = [asyncio.create_task(wait_for_slot("a"))]
        await asyncio.sleep(0)
        waiters.append(asyncio.create_task(wait_for_slot("b")))
        await asyncio.sleep(0)
        releases["c"].set()
        await asyncio.sleep(0.01)
        admitted_first = list(order)
        releases["a"].set()
        releases["b"].set()
        await asyncio.gather(*held, *waiters)
        return admitted_first

    # Then B, which holds fewer, has the one slot either may take (A would leave 3 free)
    assert asyncio.run(scenario()) == ["b"]


def test_a_cancelled_waiter_takes_no_slot_and_holds_up_no_one() -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        # Given a full gate of 2 slots, and two tenants waiting: "gone", then "next"
        gate = AdmissionGate(2, wait_seconds=1.0)
        release = asyncio.Event()
        held = await holding(gate, "holder", 1, release)
        other = await holding(gate, "other", 1, asyncio.Event())
        order: list[str] = []

        async def wait_for_slot(party: str) -> None:
            async with gate.admitted(party):
                order.append(party)

        gone = asyncio.create_task(wait_for_slot("gone"))
        await asyncio.sleep(0)
        following = asyncio.create_task(wait_for_slot("next"))
        await asyncio.sleep(0)

        # When the first waiter is cancelled (its client went away)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        in_flight_after_cancel = gate.in_flight

        # Then it took nothing, and the next free slot goes to the next waiter
        release.set()
        await asyncio.gather(*held, following)
        for task in other:
            task.cancel()
        await asyncio.gather(*other, return_exceptions=True)
        return in_flight_after_cancel, gate.in_flight, order

    assert asyncio.run(scenario()) == (2, 0, ["next"])


def test_a_waiter_cancelled_as_its_slot_is_handed_over_passes_the_slot_on() -> None:
    async def scenario() -> tuple[int, list[str]]:
        # Given a full gate of 2 slots, and two tenants waiting: "gone", then "next"
        gate = AdmissionGate(2, wait_seconds=1.0)
        release = asyncio.Event()
        held = await holding(gate, "holder", 1, release)
        other = await holding(gate, "other", 1, asyncio.Event())
        order: list[str] = []

        async def wait_for_slot(party: str) -> None:
            async with gate.admitted(party):
                order.append(party)

        gone = asyncio.create_task(wait_for_slot("gone"))
        await asyncio.sleep(0)
        following = asyncio.create_task(wait_for_slot("next"))
        await asyncio.sleep(0)

        # When a slot frees and is handed to "gone", which is cancelled before it runs
        release.set()
        while not gate.holding("gone"):
            await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, *held, return_exceptions=True)

        # Then the slot went on to the next waiter, and no slot is counted twice
        await following
        for task in other:
            task.cancel()
        await asyncio.gather(*other, return_exceptions=True)
        return gate.in_flight, order

    assert asyncio.run(scenario()) == (0, ["next"])
