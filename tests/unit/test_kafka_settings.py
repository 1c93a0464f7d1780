"""Client configuration (walletkit.stream.kafka.KafkaSettings): what KAFKA_CONFIG may tune."""

from __future__ import annotations

import pytest

from walletkit.stream.kafka import KafkaSettings, parse_kafka_config

EXTRA = {"fetch.wait.max.ms": "10", "linger.ms": "7", "security.protocol": "SSL",
         # the guarantees rest on these: KAFKA_CONFIG must not weaken them
         "acks": "1", "enable.idempotence": "false", "enable.auto.commit": "true",
         "enable.auto.offset.store": "true", "partition.assignment.strategy": "cooperative-sticky",
         "auto.offset.reset": "latest"}


def test_extra_properties_tune_the_defaults():
    s = KafkaSettings("127.0.0.1:9092", extra=EXTRA)
    assert s.group_consumer("g")["fetch.wait.max.ms"] == "10"
    assert s.reader()["fetch.wait.max.ms"] == "10"
    assert s.producer()["linger.ms"] == "7"
    assert s.group_consumer("g")["auto.offset.reset"] == "latest"
    for conf in (s.producer(), s.group_consumer("g"), s.reader(), s.admin()):
        assert conf["security.protocol"] == "SSL"


def test_extra_properties_cannot_weaken_the_guarantees():
    s = KafkaSettings("127.0.0.1:9092", extra=EXTRA)
    producer, group, reader = s.producer(), s.group_consumer("g"), s.reader()
    assert (producer["acks"], producer["enable.idempotence"]) == ("all", True)
    assert (group["enable.auto.commit"], group["enable.auto.offset.store"]) == (False, False)
    assert group["partition.assignment.strategy"] == "range"
    assert (reader["enable.auto.commit"], reader["auto.offset.reset"], reader["enable.partition.eof"]) == (False, "error", True)


def test_code_overrides_win_and_defaults_hold_without_extra():
    s = KafkaSettings("127.0.0.1:9092", extra=EXTRA)
    assert s.producer(**{"linger.ms": 1})["linger.ms"] == 1
    plain = KafkaSettings("127.0.0.1:9092")
    # Apache Kafka answers a fetch as soon as a record arrives: librdkafka's wait stays.
    assert "fetch.wait.max.ms" not in plain.group_consumer("g") and "fetch.wait.max.ms" not in plain.reader()
    assert plain.producer()["linger.ms"] == 2
    assert "group.instance.id" not in plain.group_consumer("g")
    assert KafkaSettings("b:1", instance_id="pod-0").group_consumer("g")["group.instance.id"] == "pod-0"


def test_consumers_refill_their_prefetch_promptly_and_operators_can_tune_it():
    # librdkafka's defaults pause a partition's fetching for a second whenever 100k records
    # wait locally: slow consumers (restores, views catching up) starved (docs/performance.md).
    plain = KafkaSettings("127.0.0.1:9092")
    for conf in (plain.group_consumer("g"), plain.reader()):
        assert conf["fetch.queue.backoff.ms"] < 1000 and conf["queued.min.messages"] < 100_000
    tuned = KafkaSettings("127.0.0.1:9092", extra={"fetch.queue.backoff.ms": "5", "queued.min.messages": "1000"})
    for conf in (tuned.group_consumer("g"), tuned.reader()):
        assert (conf["fetch.queue.backoff.ms"], conf["queued.min.messages"]) == ("5", "1000")


def test_kafka_config_text_is_key_value_pairs_and_anything_else_is_refused():
    assert parse_kafka_config(" linger.ms=7, security.protocol = SSL ,") == {"linger.ms": "7",
                                                                             "security.protocol": "SSL"}
    assert parse_kafka_config("") == {}
    with pytest.raises(ValueError, match="'acks' is not key=value"):
        parse_kafka_config("linger.ms=7,acks")
