"""Admission control on the event loop: at most `slots` searches at once, a newcomer waits up to
`queue_seconds` for a slot and is then turned away (429 with Retry-After, in the API)."""

import asyncio

import pytest

from serving.auth import Admission, Overloaded


def test_searches_beyond_the_slots_wait_then_are_turned_away() -> None:
    async def scenario() -> list[str]:
        admission = Admission(slots=2, queue_seconds=0.2)
        events: list[str] = []
        release = asyncio.Event()

        async def search(name: str) -> None:
            try:
                async with admission.admit():
                    events.append(f"{name} admitted")
                    await release.wait()
            except Overloaded:
                events.append(f"{name} overloaded")

        first = asyncio.create_task(search("a"))
        second = asyncio.create_task(search("b"))
        await asyncio.sleep(0.05)
        third = asyncio.create_task(search("c"))  # both slots busy past its wait
        await asyncio.sleep(0.4)
        fourth = asyncio.create_task(search("d"))  # waits, and a slot frees in time
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, second, third, fourth)
        async with admission.admit(), admission.admit():  # every slot came back
            events.append("both slots free again")
        return events

    events = asyncio.run(scenario())
    assert events == [
        "a admitted",
        "b admitted",
        "c overloaded",
        "d admitted",
        "both slots free again",
    ]


def test_the_refusal_says_when_to_come_back() -> None:
    async def scenario() -> None:
        admission = Admission(slots=1, queue_seconds=0.05)
        async with admission.admit():
            with pytest.raises(Overloaded, match="retry after 1 s"):
                async with admission.admit():
                    pass

    asyncio.run(scenario())
