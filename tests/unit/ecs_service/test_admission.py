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
