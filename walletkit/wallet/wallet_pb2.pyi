from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DepositRequest(_message.Message):
    __slots__ = ("WalletID", "Amount", "CreatedAt", "AmountMicros", "DepositID", "CreatedAtMicros", "IdempotencyKey", "Principal")
    WALLETID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    AMOUNTMICROS_FIELD_NUMBER: _ClassVar[int]
    DEPOSITID_FIELD_NUMBER: _ClassVar[int]
    CREATEDATMICROS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCYKEY_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    WalletID: str
    Amount: float
    CreatedAt: int
    AmountMicros: int
    DepositID: str
    CreatedAtMicros: int
    IdempotencyKey: str
    Principal: str
    def __init__(self, WalletID: _Optional[str] = ..., Amount: _Optional[float] = ..., CreatedAt: _Optional[int] = ..., AmountMicros: _Optional[int] = ..., DepositID: _Optional[str] = ..., CreatedAtMicros: _Optional[int] = ..., IdempotencyKey: _Optional[str] = ..., Principal: _Optional[str] = ...) -> None: ...

class KeyedDeposit(_message.Message):
    __slots__ = ("IdempotencyKey", "DepositID", "AmountMicros", "CreatedAtMicros", "Offset")
    IDEMPOTENCYKEY_FIELD_NUMBER: _ClassVar[int]
    DEPOSITID_FIELD_NUMBER: _ClassVar[int]
    AMOUNTMICROS_FIELD_NUMBER: _ClassVar[int]
    CREATEDATMICROS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    IdempotencyKey: str
    DepositID: str
    AmountMicros: int
    CreatedAtMicros: int
    Offset: int
    def __init__(self, IdempotencyKey: _Optional[str] = ..., DepositID: _Optional[str] = ..., AmountMicros: _Optional[int] = ..., CreatedAtMicros: _Optional[int] = ..., Offset: _Optional[int] = ...) -> None: ...

class Quarantined(_message.Message):
    __slots__ = ("Offset", "Reason")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    Offset: int
    Reason: str
    def __init__(self, Offset: _Optional[int] = ..., Reason: _Optional[str] = ...) -> None: ...

class Wallet(_message.Message):
    __slots__ = ("WalletID", "Balance", "BalanceMicros", "AppliedOffset", "Recent", "BalanceMicrosText", "Quarantine", "QuarantineForgottenThrough")
    WALLETID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    BALANCEMICROS_FIELD_NUMBER: _ClassVar[int]
    APPLIEDOFFSET_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    BALANCEMICROSTEXT_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINEFORGOTTENTHROUGH_FIELD_NUMBER: _ClassVar[int]
    WalletID: str
    Balance: float
    BalanceMicros: int
    AppliedOffset: int
    Recent: _containers.RepeatedCompositeFieldContainer[KeyedDeposit]
    BalanceMicrosText: str
    Quarantine: _containers.RepeatedCompositeFieldContainer[Quarantined]
    QuarantineForgottenThrough: int
    def __init__(self, WalletID: _Optional[str] = ..., Balance: _Optional[float] = ..., BalanceMicros: _Optional[int] = ..., AppliedOffset: _Optional[int] = ..., Recent: _Optional[_Iterable[_Union[KeyedDeposit, _Mapping]]] = ..., BalanceMicrosText: _Optional[str] = ..., Quarantine: _Optional[_Iterable[_Union[Quarantined, _Mapping]]] = ..., QuarantineForgottenThrough: _Optional[int] = ...) -> None: ...

class WalletInfo(_message.Message):
    __slots__ = ("WalletID", "LastDepositAmount", "RollingPeriodCumulative", "AboveThreshold", "CreatedAt", "LastDepositMicros", "RollingPeriodCumulativeMicros", "CreatedAtMicros", "DepositOffset")
    WALLETID_FIELD_NUMBER: _ClassVar[int]
    LASTDEPOSITAMOUNT_FIELD_NUMBER: _ClassVar[int]
    ROLLINGPERIODCUMULATIVE_FIELD_NUMBER: _ClassVar[int]
    ABOVETHRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    LASTDEPOSITMICROS_FIELD_NUMBER: _ClassVar[int]
    ROLLINGPERIODCUMULATIVEMICROS_FIELD_NUMBER: _ClassVar[int]
    CREATEDATMICROS_FIELD_NUMBER: _ClassVar[int]
    DEPOSITOFFSET_FIELD_NUMBER: _ClassVar[int]
    WalletID: str
    LastDepositAmount: float
    RollingPeriodCumulative: float
    AboveThreshold: bool
    CreatedAt: int
    LastDepositMicros: int
    RollingPeriodCumulativeMicros: int
    CreatedAtMicros: int
    DepositOffset: int
    def __init__(self, WalletID: _Optional[str] = ..., LastDepositAmount: _Optional[float] = ..., RollingPeriodCumulative: _Optional[float] = ..., AboveThreshold: _Optional[bool] = ..., CreatedAt: _Optional[int] = ..., LastDepositMicros: _Optional[int] = ..., RollingPeriodCumulativeMicros: _Optional[int] = ..., CreatedAtMicros: _Optional[int] = ..., DepositOffset: _Optional[int] = ...) -> None: ...

class WalletInfoList(_message.Message):
    __slots__ = ("List", "AppliedOffset", "AboveThreshold", "Recent", "TimeResolutionMicros", "Quarantine", "QuarantineForgottenThrough")
    LIST_FIELD_NUMBER: _ClassVar[int]
    APPLIEDOFFSET_FIELD_NUMBER: _ClassVar[int]
    ABOVETHRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    TIMERESOLUTIONMICROS_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINEFORGOTTENTHROUGH_FIELD_NUMBER: _ClassVar[int]
    List: _containers.RepeatedCompositeFieldContainer[WalletInfo]
    AppliedOffset: int
    AboveThreshold: bool
    Recent: _containers.RepeatedCompositeFieldContainer[KeyedDeposit]
    TimeResolutionMicros: int
    Quarantine: _containers.RepeatedCompositeFieldContainer[Quarantined]
    QuarantineForgottenThrough: int
    def __init__(self, List: _Optional[_Iterable[_Union[WalletInfo, _Mapping]]] = ..., AppliedOffset: _Optional[int] = ..., AboveThreshold: _Optional[bool] = ..., Recent: _Optional[_Iterable[_Union[KeyedDeposit, _Mapping]]] = ..., TimeResolutionMicros: _Optional[int] = ..., Quarantine: _Optional[_Iterable[_Union[Quarantined, _Mapping]]] = ..., QuarantineForgottenThrough: _Optional[int] = ...) -> None: ...
