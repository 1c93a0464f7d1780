"""Client configuration (walletkit.stream.kafka.KafkaSettings): what KAFKA_CONFIG may tune, and the
KAFKA_* variables (each also as <NAME>_FILE, a mounted Secret) mapped onto librdkafka properties."""

from __future__ import annotations

import argparse

import pytest

from walletkit.service.settings import (
    KAFKA_ENV_PROPERTIES,
    SettingError,
    env_or_file,
    kafka_env_properties,
    kafka_settings,
)
from walletkit.stream.kafka import KafkaSettings, parse_kafka_config

EXTRA = {
    "fetch.wait.max.ms": "10",
    "linger.ms": "7",
    "security.protocol": "SSL",
    # the guarantees rest on these: KAFKA_CONFIG must not weaken them
    "acks": "1",
    "enable.idempotence": "false",
    "enable.auto.commit": "true",
    "enable.auto.offset.store": "true",
    "partition.assignment.strategy": "cooperative-sticky",
    "auto.offset.reset": "latest",
}


def test_extra_properties_tune_the_defaults():
    s = KafkaSettings("127.0.0.1:9092", extra=EXTRA)
    assert s.group_consumer("g")["fetch.wait.max.ms"] == "10"
    assert s.reader()["fetch.wait.max.ms"] == "10"
    assert s.producer()["linger.ms"] == "7"
    for conf in (s.producer(), s.group_consumer("g"), s.reader(), s.admin()):
        assert conf["security.protocol"] == "SSL"


def test_extra_properties_cannot_weaken_the_guarantees():
    s = KafkaSettings("127.0.0.1:9092", extra=EXTRA)
    producer, group, reader = s.producer(), s.group_consumer("g"), s.reader()
    assert (producer["acks"], producer["enable.idempotence"]) == ("all", True)
    assert (group["enable.auto.commit"], group["enable.auto.offset.store"]) == (False, False)
    assert group["partition.assignment.strategy"] == "range"
    assert group["auto.offset.reset"] == "earliest"  # a deposit without a committed offset is never skipped
    assert (reader["enable.auto.commit"], reader["auto.offset.reset"], reader["enable.partition.eof"]) == (
        False,
        "error",
        True,
    )


def test_code_overrides_win_and_defaults_hold_without_extra():
    s = KafkaSettings("127.0.0.1:9092", extra=EXTRA)
    assert s.producer(**{"linger.ms": 1})["linger.ms"] == 1
    plain = KafkaSettings("127.0.0.1:9092")
    # An empty fetch is held 100 ms, not librdkafka's 500: a reader learns it reached a
    # partition's end only from an empty answer (restores, takeovers).
    assert plain.group_consumer("g")["fetch.wait.max.ms"] == plain.reader()["fetch.wait.max.ms"] == 100
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
    assert parse_kafka_config(" linger.ms=7, security.protocol = SSL ,") == {
        "linger.ms": "7",
        "security.protocol": "SSL",
    }
    assert parse_kafka_config("") == {}
    with pytest.raises(ValueError, match="'acks' is not key=value"):
        parse_kafka_config("linger.ms=7,acks")


# ---------------------------------------------------------------- <NAME>_FILE: values from mounted files


def test_a_password_file_is_read_less_one_trailing_newline(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    assert kafka_env_properties({"KAFKA_SASL_PASSWORD_FILE": str(secret)}) == {"sasl.password": "s3cret"}
    # Only one newline goes: the value is otherwise exactly the file (spaces, inner newlines).
    for content, value in (
        ("s3cret", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("s3cret\n\n", "s3cret\n"),
        (" a b \n", " a b "),
        ("line1\nline2\n", "line1\nline2"),
    ):
        secret.write_text(content, newline="")
        assert env_or_file("KAFKA_SASL_PASSWORD", {"KAFKA_SASL_PASSWORD_FILE": str(secret)}) == value, content


@pytest.mark.parametrize("name", sorted(KAFKA_ENV_PROPERTIES))
def test_every_mapped_variable_takes_a_file_too(tmp_path, name):
    path = tmp_path / name.lower()
    path.write_text("from-file\n")
    assert kafka_env_properties({f"{name}_FILE": str(path)}) == {KAFKA_ENV_PROPERTIES[name]: "from-file"}
    assert kafka_env_properties({name: "from-env"}) == {KAFKA_ENV_PROPERTIES[name]: "from-env"}


def test_the_plain_variable_still_works_and_empty_means_unset():
    assert kafka_env_properties(
        {"KAFKA_SASL_USERNAME": "wallet-api", "KAFKA_SASL_PASSWORD": "pw", "KAFKA_SECURITY_PROTOCOL": ""}
    ) == {"sasl.username": "wallet-api", "sasl.password": "pw"}
    assert kafka_env_properties({"KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": ""}) == {}
    assert kafka_env_properties({}) == {}


def test_both_the_variable_and_its_file_is_refused_naming_both(tmp_path):
    path = tmp_path / "password"
    path.write_text("from-file")
    with pytest.raises(SettingError, match="both KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are set"):
        kafka_env_properties({"KAFKA_SASL_PASSWORD": "from-env", "KAFKA_SASL_PASSWORD_FILE": str(path)})


def test_a_missing_unreadable_or_empty_file_is_an_error_naming_the_variable(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SettingError, match=f"KAFKA_SASL_PASSWORD_FILE={missing}: no such file"):
        kafka_env_properties({"KAFKA_SASL_PASSWORD_FILE": str(missing)})
    with pytest.raises(SettingError, match="KAFKA_SSL_CA_LOCATION_FILE=.*: cannot be read"):
        kafka_env_properties({"KAFKA_SSL_CA_LOCATION_FILE": str(tmp_path)})  # a directory
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingError, match="KAFKA_SASL_PASSWORD_FILE=.*: cannot be read"):
        kafka_env_properties({"KAFKA_SASL_PASSWORD_FILE": str(binary)})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingError, match="KAFKA_SASL_PASSWORD_FILE=.*: the file is empty"):
        kafka_env_properties({"KAFKA_SASL_PASSWORD_FILE": str(empty)})


def test_a_service_refuses_to_start_with_a_bad_password_file(tmp_path, monkeypatch):
    for name in KAFKA_ENV_PROPERTIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    args = argparse.Namespace(
        bootstrap_servers="127.0.0.1:9092", kafka_config="", session_timeout_ms=10_000, instance_id=None
    )
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exited:
        kafka_settings(args, client_id="wallet-api")
    assert "KAFKA_SASL_PASSWORD_FILE" in str(exited.value.code) and "no such file" in str(exited.value.code)
    (tmp_path / "absent").write_text("pw\n")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "wallet-api")
    settings = kafka_settings(args, client_id="wallet-api")
    assert settings.producer()["sasl.password"] == "pw" and settings.producer()["sasl.username"] == "wallet-api"
