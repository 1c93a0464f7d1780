"""The processors' tuning flags: bad values stop the service before it connects anywhere."""

from __future__ import annotations

import pytest

from wallet_above_threshold.main import main as above_threshold_main
from wallet_balance.main import main as balance_main

# Validation happens before any connection: nothing listens here, nothing is dialled.
BROKER = ["--bootstrap-servers", "127.0.0.1:1"]


@pytest.mark.parametrize("main", [balance_main, above_threshold_main])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--cache-entries", "-1"], "--cache-entries must be 0"),
    ],
)
def test_out_of_range_tuning_is_a_usage_error(main, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*BROKER, *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_batch_size_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("WALLET_BATCH_SIZE", "0")
    with pytest.raises(SystemExit):
        balance_main(BROKER)
    assert "--batch-size must be at least 1" in capsys.readouterr().err
