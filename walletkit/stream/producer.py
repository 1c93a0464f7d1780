"""One transactional producer: a transactional id's client, its bounded calls, its replacement.

Both writers of the toolkit's transactions use it: a processor member's changelog writer
(:class:`~walletkit.stream.checkpoint.ChangelogWriter`) and each lane of a transactional
emitter (:mod:`~walletkit.stream.emitter`). What they share is the hard part of Kafka's
transactional producer:

- registering the id (``init_transactions``) fences an earlier producer with the same id
  and ends what it left open; it is retried while the coordinator loads or moves;
- a call that talks to a coordinator may outlast its own timeout (librdkafka issues 5456,
  5511), so each runs through :class:`~walletkit.stream.kafka.BoundedCalls`; a call that
  never returns leaves its client *behind*: never called again nor destroyed until the call
  returns, and the next :meth:`TransactionalProducer.start` registers a new client, whose
  registration fences the stuck one and ends its transaction;
- a commit whose outcome is unknown and retriable is asked again, which is how to learn it;
- a failed abort, or a fatal error, means the client is replaced the same way.

What each writer does with a failure (a checkpoint rewinds its batch, a lane produces its
records again) stays with the writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from walletkit.stream.errors import BrokerUnavailable, ClientStuck
from walletkit.stream.kafka import BoundedCalls, LeftBehind, init_transactions, kafka_error

log = logging.getLogger(__name__)


class TransactionalProducer:
    """The client of ``transactional_id``, made by ``make_producer(**config)`` at :meth:`start`.

    ``fatal`` says the client must be replaced (a fatal error, an unfinished abort, a call that
    never returned); ``stuck`` holds that call, if any. ``on_error(err)`` hears every error the
    client reports.
    """

    def __init__(
        self,
        make_producer: Callable[..., Producer],
        transactional_id: str,
        *,
        name: str,
        config: dict[str, Any] | None = None,
        on_error: Callable[[KafkaError], None] | None = None,
    ) -> None:
        self.transactional_id = transactional_id
        self.name = name
        self._make_producer = make_producer
        self._config = dict(config or {})
        self._on_error = on_error
        self.producer: Producer | None = None
        self.fatal = False
        self.in_transaction = False
        self.stuck: ClientStuck | None = None
        #: The transactional calls that talk to coordinators, bounded (see BoundedCalls).
        self.calls = BoundedCalls(name)
        #: Clients left behind in a call, kept until it returns.
        self._left_behind = LeftBehind()

    def _error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = True
        if self._on_error is not None:
            self._on_error(err)

    def start(self, deadline: float, attempt_timeout: float) -> None:
        """Make a client and register the id (fencing an earlier one, ending what it left open),
        retried until ``deadline`` (monotonic); BrokerUnavailable then."""
        self._left_behind.prune()
        self.fatal = True  # until the new client is registered: a failed start is replaced again
        self.in_transaction = False
        self.stuck = None
        self.producer = self._make_producer(
            **{**self._config, "error_cb": self._error, "transactional.id": self.transactional_id}
        )
        try:
            init_transactions(self.producer, self.transactional_id, deadline, attempt_timeout, calls=self.calls)
        except ClientStuck as exc:
            self.leave_behind(exc)
            raise BrokerUnavailable(f"cannot register transactional id {self.transactional_id!r}: {exc}") from exc
        self.fatal = False

    def leave_behind(self, exc: ClientStuck) -> None:
        """The client is stuck in a call: keep it until the call returns, never call it again;
        the next :meth:`start` registers a new one."""
        self.stuck = exc
        self.fatal = True
        producer, self.producer = self.producer, None
        if producer is not None:
            self._left_behind.keep(producer, exc.returned.is_set)

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.in_transaction = True

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any, timeout: float) -> None:
        """Add consumed offsets to the transaction (bounded: ClientStuck if it never returns)."""
        self.calls(timeout, self.producer.send_offsets_to_transaction, offsets, group_metadata, timeout)

    def commit(self, deadline: float) -> None:
        """Commit the transaction, asking again while its outcome is unknown and retriable,
        until ``deadline``; the last KafkaException (or ClientStuck) otherwise."""
        while True:
            timeout = max(0.1, deadline - time.monotonic())
            try:
                self.calls(timeout, self.producer.commit_transaction, timeout)
                self.in_transaction = False
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if (
                    err is not None
                    and err.retriable()
                    and not err.txn_requires_abort()
                    and not err.fatal()
                    and time.monotonic() < deadline
                ):
                    continue  # the outcome is unknown: committing again is how to learn it
                raise

    def abort(self, timeout: float) -> bool:
        """Abort the open transaction; True if it certainly aborted. When it cannot (an abort that
        times out waiting for a coordinator leaves the client refusing every later transaction
        until it is called again and completes; a stuck call), the client is marked for
        replacement: its successor's registration ends the transaction once the coordinator can."""
        if self.producer is None or self.stuck is not None:
            return False
        try:
            self.calls(timeout, self.producer.abort_transaction, timeout)
            self.in_transaction = False
            return True
        except KafkaException as exc:
            log.warning("%s: abort transaction: %s; replacing the producer", self.name, exc)
            self.fatal = True
        except ClientStuck as exc:
            self.leave_behind(exc)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Abort what is open (unless the client failed) and let the client go."""
        if self.stuck is not None:  # must not be called into again: it is left behind
            return
        producer, self.producer = self.producer, None
        if producer is None:
            return
        try:
            if self.in_transaction and not self.fatal:
                self.calls(timeout, producer.abort_transaction, timeout)
            # A client in a fatal state raises here too; it has nothing left to deliver.
            producer.flush(timeout)
        except KafkaException as exc:
            log.info("%s: closing the producer: %s", self.name, exc)
        except ClientStuck as exc:
            log.warning("%s: closing the producer: %s", self.name, exc)
            self._left_behind.keep(producer, exc.returned.is_set)
        self.in_transaction = False
