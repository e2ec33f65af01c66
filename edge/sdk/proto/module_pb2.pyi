from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("manifest_toml",)
    MANIFEST_TOML_FIELD_NUMBER: _ClassVar[int]
    manifest_toml: str
    def __init__(self, manifest_toml: _Optional[str] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("id", "locale", "entitlements")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    locale: str
    entitlements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., locale: _Optional[str] = ..., entitlements: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("gateway_id", "tenants", "config_json", "data_dir", "health_interval", "store_path")
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    HEALTH_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    STORE_PATH_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    config_json: str
    data_dir: str
    health_interval: float
    store_path: str
    def __init__(self, gateway_id: _Optional[str] = ..., tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ..., config_json: _Optional[str] = ..., data_dir: _Optional[str] = ..., health_interval: _Optional[float] = ..., store_path: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("name", "types", "max_batch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    types: _containers.RepeatedScalarFieldContainer[str]
    max_batch: int
    def __init__(self, name: _Optional[str] = ..., types: _Optional[_Iterable[str]] = ..., max_batch: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("tenant", "position", "rejected")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    position: int
    rejected: _containers.ScalarMap[int, str]
    def __init__(self, tenant: _Optional[str] = ..., position: _Optional[int] = ..., rejected: _Optional[_Mapping[int, str]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("subscription", "ack")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    ack: Ack
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("position", "id", "type", "subject", "device", "sequence", "time", "body")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    position: int
    id: str
    type: str
    subject: str
    device: str
    sequence: int
    time: float
    body: bytes
    def __init__(self, position: _Optional[int] = ..., id: _Optional[str] = ..., type: _Optional[str] = ..., subject: _Optional[str] = ..., device: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[float] = ..., body: _Optional[bytes] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("tenant", "events")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, tenant: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("tenant", "type", "subject", "data_json")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    type: str
    subject: str
    data_json: bytes
    def __init__(self, tenant: _Optional[str] = ..., type: _Optional[str] = ..., subject: _Optional[str] = ..., data_json: _Optional[bytes] = ...) -> None: ...

class PublishReply(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("ok", "detail", "handler_errors")
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    HANDLER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    detail: str
    handler_errors: int
    def __init__(self, ok: _Optional[bool] = ..., detail: _Optional[str] = ..., handler_errors: _Optional[int] = ...) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class WritePointRequest(_message.Message):
    __slots__ = ("tenant", "site", "device", "point", "value_json")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    site: str
    device: str
    point: str
    value_json: str
    def __init__(self, tenant: _Optional[str] = ..., site: _Optional[str] = ..., device: _Optional[str] = ..., point: _Optional[str] = ..., value_json: _Optional[str] = ...) -> None: ...

class WritePointReply(_message.Message):
    __slots__ = ("ok", "reason", "unknown_target")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_TARGET_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    unknown_target: bool
    def __init__(self, ok: _Optional[bool] = ..., reason: _Optional[str] = ..., unknown_target: _Optional[bool] = ...) -> None: ...
