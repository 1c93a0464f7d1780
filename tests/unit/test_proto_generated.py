"""The committed Python code of proto/wallet.proto must be what protoc generates now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import require_module

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("wallet_pb2.py", "wallet_pb2.pyi")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    require_module("grpc_tools", "grpcio-tools (the dev extra) generates the code")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "proto" / "wallet.proto"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        committed = (ROOT / "walletkit" / "wallet" / name).read_text()
        assert committed == fresh, f"walletkit/wallet/{name} is stale: run `make proto` and commit the result"


def test_reference_field_numbers_are_unchanged() -> None:
    """The Go reference's fields keep their numbers and types (the wire contract)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    from walletkit.wallet import wallet_pb2 as pb

    expected = {
        "DepositRequest": {
            "WalletID": (1, F.TYPE_STRING),
            "Amount": (2, F.TYPE_DOUBLE),
            "CreatedAt": (3, F.TYPE_INT64),
        },
        "Wallet": {"WalletID": (1, F.TYPE_STRING), "Balance": (2, F.TYPE_DOUBLE)},
        "WalletInfo": {
            "WalletID": (1, F.TYPE_STRING),
            "LastDepositAmount": (2, F.TYPE_DOUBLE),
            "RollingPeriodCumulative": (3, F.TYPE_DOUBLE),
            "AboveThreshold": (4, F.TYPE_BOOL),
            "CreatedAt": (5, F.TYPE_INT64),
        },
        "WalletInfoList": {"List": (1, F.TYPE_MESSAGE)},
    }
    for message, fields in expected.items():
        desc = pb.DESCRIPTOR.message_types_by_name[message]
        for name, (number, type_) in fields.items():
            field = desc.fields_by_name[name]
            assert (field.number, field.type) == (number, type_), f"{message}.{name}"
    assert pb.DESCRIPTOR.message_types_by_name["WalletInfoList"].fields_by_name["List"].is_repeated
