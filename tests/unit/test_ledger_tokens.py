"""A consistency token is refused as impossible only on an end offset learnt after the request
arrived. The race (another replica stores a deposit while this one's lookup is on its way) cannot
be timed against a real broker, so the broker's answer is played by ``_end_offset`` here: the
test says so, and everything else is the real Ledger code."""

from __future__ import annotations

import asyncio
import time

import pytest

from wallet_api.ledger import InvalidToken, Ledger


class SlowBroker(Ledger):
    def __init__(self) -> None:  # only what _check_exists uses
        self._ends, self._ends_lookups, self.end, self.lookups = {}, {}, 100, 0

    def _end_offset(self, partition: int) -> int | None:
        end = self.end  # ListOffsets is answered as of when it was sent ...
        self.lookups += 1
        time.sleep(0.2)  # ... and the answer takes a while
        return end


async def test_a_deposit_stored_during_a_lookup_is_not_refused():
    ledger = SlowBroker()
    first = asyncio.create_task(ledger._check_exists(0, 10))
    await asyncio.sleep(0.05)
    ledger.end = 106  # another replica stores offset 105 and answers 202 "0-105"
    await ledger._check_exists(0, 105)  # joins nothing stale: accepted
    await first
    await ledger._check_exists(0, 105)


async def test_an_impossible_token_is_refused_and_concurrent_ones_share_lookups():
    ledger = SlowBroker()
    results = await asyncio.gather(*(ledger._check_exists(0, 10_000 + i) for i in range(50)), return_exceptions=True)
    assert all(isinstance(r, InvalidToken) and "names no deposit" in str(r) for r in results)
    assert ledger.lookups <= 2, ledger.lookups
    with pytest.raises(InvalidToken):
        await ledger._check_exists(0, 100)
    await ledger._check_exists(0, 99)
