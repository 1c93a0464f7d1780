"""The wallet seen through Kafka: deposits go to the emitter, reads come from views.

This module knows the stream toolkit and the wallet messages, not HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from walletkit.stream import (
    DEFAULT_LANES,
    REQUEST_ID_HEADER,
    Emitter,
    Guarantee,
    KafkaSettings,
    TableVersion,
    TableVersions,
    TopicManager,
    VersionWatch,
    View,
    ViewState,
    group_has_passed,
    persistent_id,
    readable_ends,
    table_topic,
    trim_oldest,
)
from walletkit.wallet import idempotency, money
from walletkit.wallet.codecs import (
    DEPOSIT,
    WALLET,
    WALLET_INFO_LIST,
    DepositRequest,
    wallet_balance_micros,
    wallet_flagged,
)
from walletkit.wallet.topology import (
    ABOVE_THRESHOLD_GROUP,
    BALANCE_GROUP,
    DEPOSIT_TOPIC,
    TABLE_VERSIONS_TOPIC,
    TABLES,
    live_groups,
    table,
    wait_for_topics,
)
from walletkit.wallet.wallet_pb2 import KeyedDeposit

log = logging.getLogger(__name__)

_KEYED_IDS = uuid.UUID("6f1c2a57-8a3e-4f43-9d2b-5e0c7b1d9a40")  # namespace of ids derived from idempotency keys


class IdempotencyConflict(Exception):
    """An Idempotency-Key reused for a different deposit."""


class InvalidToken(ValueError):
    """A consistency token that is malformed or belongs to another wallet."""


class NotReflected(Exception):
    """The views did not reflect a deposit within the allowed time."""


class NotApplied(Exception):
    """A processor quarantined the deposit of a consistency token: it will never be applied."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """An acknowledged deposit."""

    deposit_id: str
    wallet_id: str
    amount_micros: int
    created_at_micros: int
    partition: int
    offset: int
    #: True when this answers a retry of a deposit already stored (same key).
    replayed: bool = False

    @property
    def consistency_token(self) -> str:
        """``<partition>-<offset>``: ``GET /details`` with it waits until this deposit shows."""
        return f"{self.partition}-{self.offset}"


_TOKEN = re.compile(r"([0-9]{1,9})-([0-9]{1,18})")  # ASCII digits only


def parse_token(token: str) -> tuple[int, int]:
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidToken("token must be the ConsistencyToken of a deposit, like 3-1542")
    return int(match[1]), int(match[2])


@dataclass(frozen=True, slots=True)
class Details:
    wallet_id: str
    balance_micros: int
    above_threshold: bool


#: Wallets whose details are kept in memory for repeated reads (~150 bytes each).
DETAILS_CACHE_ENTRIES = 100_000
_UNCACHED = object()


class Ledger:
    """Emits deposits and answers wallet details from the local views."""

    def __init__(
        self,
        settings: KafkaSettings,
        state_dir: str | Path,
        *,
        partitions: int,
        create_topics: bool,
        replication_factor: int = -1,
        min_insync_replicas: int = -1,
        guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
        emitter_lanes: int = DEFAULT_LANES,
    ) -> None:
        self._settings = settings
        self._partitions = partitions
        self._create_topics = create_topics
        self._stopping = threading.Event()  # ends the wait for missing topics
        #: Topics the start waits for (None: not waiting), shown in /healthz and /readyz.
        self.waiting_for_topics: list[str] | None = None
        self._replication = replication_factor
        self._min_insync = min_insync_replicas
        self.guarantee = Guarantee(guarantee)
        state = Path(state_dir)
        # Exactly-once: deposits commit in transactions, so one is stored once whatever the
        # brokers do. The id is stable across restarts on the same disk (or the instance id),
        # so a restart fences and aborts what its predecessor left open.
        transactional_id = None
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            transactional_id = f"wallet-api-{settings.instance_id or persistent_id(state, 'emitter-id')}"
        self.emitter = Emitter(settings, DEPOSIT_TOPIC, DEPOSIT, transactional_id=transactional_id, lanes=emitter_lanes)
        self._state = state
        #: A view of each table the registry marks as read by the API, by base group; the live
        #: version's (a rebuild switches it, see _switch).
        self.views: dict[str, View] = {
            t.base: View(settings, t.topic, t.codec, state / t.topic) for t in TABLES if t.viewed
        }
        self._versions = TableVersions(settings, TABLE_VERSIONS_TOPIC)
        self._version_watch: VersionWatch | None = None
        self._switching: dict[str, asyncio.Task] = {}  # base group -> the switch under way
        # Idempotent deposits being emitted by this process, by (wallet, key).
        self._in_flight: dict[tuple[str, str], asyncio.Future[Receipt]] = {}
        # Readers waiting for a wallet to change in a view, woken by the views' threads.
        self._changed: dict[str, asyncio.Event] = {}
        self._waiting: collections.Counter[str] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Details of recently read wallets. Reading both views and decoding their values
        # was about 40 % of a GET; a view batch drops the entries of the keys it changed.
        # A read caches its result only if no batch landed while it read (generation).
        self._details: dict[str, Details | None] = {}
        self._details_lock = threading.Lock()
        self._details_generation = 0
        # End offsets of the deposit partitions, as last learnt: a token at or beyond its
        # partition's end names no deposit and is refused at once instead of waited for.
        self._ends: dict[int, int] = {}
        self._ends_lookups: dict[int, tuple[float, asyncio.Future[int | None]]] = {}  # (started, its end)
        self._offsets_reader: Consumer | None = None
        self._offsets_reader_lock = threading.Lock()

    async def start(self) -> None:
        """Check the topics (waiting, unready, while they are missing), connect the emitter,
        start following both tables."""
        try:
            self._topic_partitions = await asyncio.to_thread(
                wait_for_topics,
                TopicManager(
                    self._settings, replication_factor=self._replication, min_insync_replicas=self._min_insync
                ),
                self._partitions,
                create=self._create_topics,
                stop=self._stopping,
                service="wallet-api",
                log=log,
                on_wait=self._waiting_for,
            )
        except asyncio.CancelledError:
            self._stopping.set()  # the thread looking for the topics ends too
            raise
        if self._topic_partitions is None:
            raise asyncio.CancelledError("stopped while waiting for the topics")
        await self.emitter.start()
        self._loop = asyncio.get_running_loop()
        # The tables' live versions (a rebuild may have switched them): views follow those.
        live = live_groups(await asyncio.to_thread(self._versions.read))
        for base, group in live.items():
            if base in self.views and group != base:
                self.views[base] = self._view(base, group)
        for view in self.views.values():
            view.subscribe(self._on_view_batch)
            view.start()
        loop = self._loop
        self._version_watch = self._versions.watch(
            lambda versions: loop.call_soon_threadsafe(self._on_versions, versions)
        )

    def _waiting_for(self, missing: list[str] | None) -> None:  # on the waiting thread
        self.waiting_for_topics = missing

    @property
    def balances(self) -> View:
        return self.views[BALANCE_GROUP]

    @property
    def flags(self) -> View:
        return self.views[ABOVE_THRESHOLD_GROUP]

    def _view(self, base: str, group: str) -> View:
        """A view of ``group``'s table, a version of ``base``'s."""
        topic = table_topic(group)
        return View(self._settings, topic, table(base).codec, self._state / topic)

    # -- table versions ------------------------------------------------------------

    def _on_versions(self, versions: dict[str, TableVersion]) -> None:  # on the event loop
        for base, group in live_groups(versions).items():
            view = self.views.get(base)
            if view is None:
                continue  # a table the API does not read
            if table_topic(group) != view.topic and base not in self._switching:
                self._switching[base] = asyncio.get_running_loop().create_task(self._switch(base, group))

    async def _switch(self, base: str, group: str) -> None:
        """Swap a view for the table of ``group`` once it holds everything the live one held.

        The live group (the old version) stops when the switch is published; the new group
        goes on from where the rebuild stopped. Readers move once the new group has consumed
        at least as far as the old one had and the new view has read the new table to its
        end after that: a wallet never shows less than it showed before the switch.
        """
        old = self.views[base]
        old.retiring = True  # its topic may be deleted before the readers move
        old_group = old.topic.removesuffix("-table")
        view = self._view(base, group)
        view.subscribe(self._on_view_batch)
        view.start()
        log.info("table %s switched to group %s: opening view %s beside %s", base, group, view.topic, old.topic)
        try:
            admin = AdminClient(self._settings.admin())  # one client for this switch's polls
            while not await asyncio.to_thread(group_has_passed, self._settings, group, old_group, DEPOSIT_TOPIC, admin):
                await asyncio.sleep(0.5)
            await asyncio.to_thread(view.wait_caught_up, None)
            ends = await asyncio.to_thread(readable_ends, self._settings, view.topic, self._topic_partitions)
            while not await asyncio.to_thread(view.wait_reaches, ends, 5.0):
                log.info("table %s: view %s still catching up before readers move", base, view.topic)
            self.views[base] = view
            self._on_view_batch(None)  # cached details came from the old view
            log.info("table %s: readers moved to %s", base, view.topic)
            await asyncio.to_thread(old.stop)
            await asyncio.to_thread(shutil.rmtree, old.path, True)
        except asyncio.CancelledError:
            await asyncio.to_thread(view.stop)
            raise
        finally:
            self._switching.pop(base, None)

    async def close(self) -> None:
        self._stopping.set()
        if self._version_watch is not None:
            await asyncio.to_thread(self._version_watch.stop)
        for task in list(self._switching.values()):
            task.cancel()
        await self.emitter.close()
        for view in list(self.views.values()):
            await asyncio.to_thread(view.stop)
        if self._offsets_reader is not None:
            await asyncio.to_thread(self._offsets_reader.close)

    @property
    def ready(self) -> bool:
        """Able to serve reads: both views caught up and not failed. The producer's state does
        not count: during a broker outage reads go on from the views and deposits answer 503."""
        return all(v.caught_up and v.state is not ViewState.FAILED for v in self.views.values())

    @property
    def alive(self) -> bool:
        """False once a view failed: it does not recover by itself, a restart rebuilds it."""
        return all(v.state is not ViewState.FAILED for v in self.views.values())

    def status(self) -> dict[str, object]:
        return {
            "producer_connected": self.emitter.connected,
            "processing_guarantee": self.guarantee.value,
            "balance_view": self.balances.state.value,
            "above_threshold_view": self.flags.state.value,
            "balance_table": self.balances.topic,
            "above_threshold_table": self.flags.topic,
            # Changelog records each replica is behind, from its last fetch (null before the first).
            "balance_view_behind": self.balances.behind,
            "above_threshold_view_behind": self.flags.behind,
            **({"waiting_for_topics": self.waiting_for_topics} if self.waiting_for_topics is not None else {}),
        }

    async def deposit(
        self,
        wallet_id: str,
        amount_micros: int,
        idempotency_key: str | None = None,
        *,
        principal: str | None = None,
        request_id: str | None = None,
    ) -> Receipt:
        """Emit one deposit; returns once the broker acknowledged it (EmitError if not).

        With an ``idempotency_key``, a retry of a deposit already stored is answered
        with the original receipt and nothing is emitted; if the original is still
        on its way (another replica, not yet processed), the retry is emitted and
        the processors apply the key once. IdempotencyConflict if the key was used
        for a different amount. With a ``principal``, its keys are its own (see
        ``idempotency.scoped``) and it is written into the record.
        """
        if idempotency_key:
            idempotency_key = idempotency.scoped(idempotency_key, principal)
            original = self._stored_keyed(wallet_id, idempotency_key)
            if original is not None:
                return self._replay(original, wallet_id, amount_micros)
            pending = self._in_flight.get((wallet_id, idempotency_key))
            if pending is not None:
                first = await asyncio.shield(pending)
                if first.amount_micros != amount_micros:
                    raise IdempotencyConflict("Idempotency-Key was already used for a different Amount")
                return replace(first, replayed=True)
            fut: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
            self._in_flight[(wallet_id, idempotency_key)] = fut
            try:
                receipt = await self._emit(wallet_id, amount_micros, idempotency_key, principal, request_id)
                fut.set_result(receipt)
                return receipt
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: nobody else may be waiting
                raise
            finally:
                del self._in_flight[(wallet_id, idempotency_key)]
        return await self._emit(wallet_id, amount_micros, None, principal, request_id)

    async def _emit(
        self, wallet_id: str, amount_micros: int, key: str | None, principal: str | None, request_id: str | None = None
    ) -> Receipt:
        now = time.time_ns() // 1000
        # A key gives a deterministic id, so retries through any replica carry the same one.
        deposit_id = uuid.uuid5(_KEYED_IDS, f"{wallet_id}\0{key}").hex if key else uuid.uuid4().hex
        record = DepositRequest(
            WalletID=wallet_id,
            Amount=money.micros_to_float(amount_micros),
            CreatedAt=now // 1_000_000,
            AmountMicros=amount_micros,
            DepositID=deposit_id,
            CreatedAtMicros=now,
        )
        if key:
            record.IdempotencyKey = key
        if principal:
            record.Principal = principal
        # The request's id rides in a record header, so the processors' log lines about this
        # deposit carry it too (Context.request_id).
        delivery = await self.emitter.emit(
            wallet_id, record, [(REQUEST_ID_HEADER, request_id.encode())] if request_id else None
        )
        if delivery.offset >= self._ends.get(delivery.partition, 0):
            self._ends[delivery.partition] = delivery.offset + 1
        # The broker's time when it stamped the record: what the processors judge it by.
        if delivery.log_append_time_ms is not None:
            now = delivery.log_append_time_ms * 1000
        return Receipt(deposit_id, wallet_id, amount_micros, now, delivery.partition, delivery.offset)

    def _stored_keyed(self, wallet_id: str, key: str) -> KeyedDeposit | None:
        keys = self.balances.get(idempotency.shard_key(wallet_id, key))
        found = idempotency.find(keys.Recent, key) if keys is not None else None
        if found is None:  # kept in the wallet's own value before side entries
            wallet = self.balances.get(wallet_id)
            found = idempotency.find(wallet.Recent, key) if wallet is not None else None
        return found

    def _replay(self, original: KeyedDeposit, wallet_id: str, amount_micros: int) -> Receipt:
        if original.AmountMicros != amount_micros:
            raise IdempotencyConflict("Idempotency-Key was already used for a different Amount")
        return Receipt(
            original.DepositID,
            wallet_id,
            original.AmountMicros,
            original.CreatedAtMicros,
            self.emitter.partition_of(wallet_id),
            original.Offset,
            replayed=True,
        )

    async def details_reflecting(self, wallet_id: str, token: str, timeout: float) -> Details | None:
        """``details()`` once both views reflect the deposit of ``token`` (NotReflected after
        ``timeout``), read from the views themselves: the cache may still hold the value
        from before the batch that carried the deposit, until that batch's notification."""
        await self._wait_reflected(wallet_id, token, timeout)
        return self._read(wallet_id)

    async def _wait_reflected(self, wallet_id: str, token: str, timeout: float) -> None:
        """Wait until both views reflect the deposit of ``token`` (NotReflected after ``timeout``)."""
        partition, offset = parse_token(token)
        if partition != self.emitter.partition_of(wallet_id):
            raise InvalidToken("token belongs to a deposit of another wallet")
        await self._check_exists(partition, offset)
        deadline = time.monotonic() + timeout
        self._waiting[wallet_id] += 1
        try:
            while True:
                # Registered before the check, so a view batch landing in between still wakes us.
                event = self._changed.setdefault(wallet_id, asyncio.Event())
                if self._reflects(wallet_id, offset):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NotReflected(f"deposit {token} is not visible yet after {timeout:g}s")
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            self._waiting[wallet_id] -= 1
            if not self._waiting[wallet_id]:  # the last reader of this wallet leaves no trace
                del self._waiting[wallet_id]
                self._changed.pop(wallet_id, None)

    async def _check_exists(self, partition: int, offset: int) -> None:
        """InvalidToken if ``offset`` is at or beyond the end of its deposit partition.

        Only an end learnt after the request arrived counts (another replica may have stored
        the deposit a moment ago): a lookup that started earlier is waited for, then a fresh
        one made. One lookup per partition runs at a time, shared by every request waiting.
        """
        if offset < self._ends.get(partition, 0):
            return
        arrived = time.monotonic()
        while True:
            running = self._ends_lookups.get(partition)
            if running is None:
                end = await self._look_up_end(partition)
                break
            started, done = running
            end = await asyncio.shield(done)
            if started >= arrived:
                break
        # None: the broker did not answer; the token is then waited for as usual.
        if end is not None and offset >= max(end, self._ends.get(partition, 0)):
            raise InvalidToken(
                f"token {partition}-{offset} names no deposit: partition {partition} ends at offset {end}"
            )

    async def _look_up_end(self, partition: int) -> int | None:
        done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._ends_lookups[partition] = (time.monotonic(), done)
        end = None
        try:
            end = await asyncio.to_thread(self._end_offset, partition)
            if end is not None:
                self._ends[partition] = max(end, self._ends.get(partition, 0))
        finally:
            del self._ends_lookups[partition]
            done.set_result(end)
        return end

    def _end_offset(self, partition: int) -> int | None:
        """The deposit partition's high watermark (None when the broker does not answer: then
        the token is waited for as usual, bounded by the consistency timeout)."""
        try:
            with self._offsets_reader_lock:
                if self._offsets_reader is None:
                    self._offsets_reader = Consumer(self._settings.reader())
            return self._offsets_reader.get_watermark_offsets(
                TopicPartition(DEPOSIT_TOPIC, partition), timeout=2, cached=False
            )[1]
        except (KafkaException, RuntimeError) as exc:
            log.info("end of %s[%d] unknown: %s", DEPOSIT_TOPIC, partition, exc)
            return None

    def _reflects(self, wallet_id: str, offset: int) -> bool:
        for view in self.views.values():
            notes = view.get(idempotency.quarantine_key(wallet_id))
            if notes is not None:
                token = f"{self.emitter.partition_of(wallet_id)}-{offset}"
                reason = idempotency.quarantined(notes.Quarantine, offset)
                if reason is not None:
                    raise NotApplied(f"deposit {token} was not applied to {view.topic}: {reason}")
                if notes.HasField("QuarantineForgottenThrough") and offset <= notes.QuarantineForgottenThrough:
                    raise NotApplied(
                        f"deposit {token} cannot be confirmed in {view.topic}: more than "
                        f"{idempotency.QUARANTINE_NOTES} deposits of this wallet were quarantined and "
                        "the older notes are gone; the deposit topic has the ledger"
                    )
        wallet = self.balances.get(wallet_id)
        info = self.flags.get(wallet_id)
        return (
            wallet is not None
            and WALLET.applied_offset(wallet) >= offset
            and info is not None
            and WALLET_INFO_LIST.applied_offset(info) >= offset
        )

    def _on_view_batch(self, records: list[tuple[bytes, bytes | None]] | None) -> None:  # on a view's thread
        # Runs after the batch is in the view's store: a read that began earlier may have
        # seen the old value, so it must not cache it (generation), and what is cached goes.
        with self._details_lock:
            self._details_generation += 1
            cache = self._details
            if records is None:  # the view was wiped
                cache.clear()
            elif cache:
                for key, _ in records:
                    cache.pop(idempotency.owner(key.decode(errors="replace")), None)
        # Only readers waiting on a token need to hear of a batch: most batches cost nothing here.
        if self._changed and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, None if records is None else [key for key, _ in records])

    def _wake(self, keys: list[bytes] | None) -> None:
        if keys is None:  # a view was wiped: every waiter checks again
            events = list(self._changed.values())
            self._changed.clear()
            for event in events:
                event.set()
            return
        for key in keys:
            event = self._changed.pop(idempotency.owner(key.decode(errors="replace")), None)
            if event is not None:
                event.set()

    def details(self, wallet_id: str) -> Details | None:
        """The wallet's balance and flag, None if the balance view does not know it (cached)."""
        cached = self._details.get(wallet_id, _UNCACHED)
        if cached is not _UNCACHED:
            return cached
        generation = self._details_generation
        found = self._read(wallet_id)
        # Unknown wallets are cached too (None): the batch that creates one drops the entry.
        with self._details_lock:
            if generation == self._details_generation:
                self._details[wallet_id] = found
                trim_oldest(self._details, DETAILS_CACHE_ENTRIES)
        return found

    def _read(self, wallet_id: str) -> Details | None:
        """``details()`` from the views themselves."""
        wallet = self.balances.get(wallet_id)
        if wallet is None:
            return None
        info = self.flags.get(wallet_id)
        return Details(wallet_id, wallet_balance_micros(wallet), wallet_flagged(info) if info is not None else False)
