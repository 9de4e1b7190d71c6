from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("session", "sender", "receiver", "label", "kind", "payload", "chash", "seq")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CHASH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    session: str
    sender: str
    receiver: str
    label: str
    kind: int
    payload: bytes
    chash: str
    seq: int
    def __init__(self, session: _Optional[str] = ..., sender: _Optional[str] = ..., receiver: _Optional[str] = ..., label: _Optional[str] = ..., kind: _Optional[int] = ..., payload: _Optional[bytes] = ..., chash: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("sender", "receiver", "incarnation", "address")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    sender: str
    receiver: str
    incarnation: str
    address: str
    def __init__(self, sender: _Optional[str] = ..., receiver: _Optional[str] = ..., incarnation: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("hello", "envelopes")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    envelopes: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., envelopes: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("incarnation", "delivered")
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    incarnation: str
    delivered: int
    def __init__(self, incarnation: _Optional[str] = ..., delivered: _Optional[int] = ...) -> None: ...
