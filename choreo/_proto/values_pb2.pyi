from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Container(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTAINER_UNSPECIFIED: _ClassVar[Container]
    CONTAINER_LIST: _ClassVar[Container]
    CONTAINER_TUPLE: _ClassVar[Container]
    CONTAINER_SET: _ClassVar[Container]
    CONTAINER_FROZENSET: _ClassVar[Container]
    CONTAINER_DICT: _ClassVar[Container]
CONTAINER_UNSPECIFIED: Container
CONTAINER_LIST: Container
CONTAINER_TUPLE: Container
CONTAINER_SET: Container
CONTAINER_FROZENSET: Container
CONTAINER_DICT: Container

class BigInt(_message.Message):
    __slots__ = ("negative", "magnitude")
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    MAGNITUDE_FIELD_NUMBER: _ClassVar[int]
    negative: bool
    magnitude: bytes
    def __init__(self, negative: _Optional[bool] = ..., magnitude: _Optional[bytes] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("none", "bool_value", "int_value", "big_int", "float_value", "str_value", "bytes_value", "container", "dataclass", "enum", "message", "str_surrogates", "items", "names", "member", "data", "ints", "floats")
    NONE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BIG_INT_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STR_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    DATACLASS_FIELD_NUMBER: _ClassVar[int]
    ENUM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STR_SURROGATES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    FLOATS_FIELD_NUMBER: _ClassVar[int]
    none: bool
    bool_value: bool
    int_value: int
    big_int: BigInt
    float_value: float
    str_value: str
    bytes_value: bytes
    container: Container
    dataclass: str
    enum: str
    message: str
    str_surrogates: bytes
    items: _containers.RepeatedCompositeFieldContainer[Value]
    names: _containers.RepeatedScalarFieldContainer[str]
    member: str
    data: bytes
    ints: _containers.RepeatedScalarFieldContainer[int]
    floats: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, none: _Optional[bool] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., big_int: _Optional[_Union[BigInt, _Mapping]] = ..., float_value: _Optional[float] = ..., str_value: _Optional[str] = ..., bytes_value: _Optional[bytes] = ..., container: _Optional[_Union[Container, str]] = ..., dataclass: _Optional[str] = ..., enum: _Optional[str] = ..., message: _Optional[str] = ..., str_surrogates: _Optional[bytes] = ..., items: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., names: _Optional[_Iterable[str]] = ..., member: _Optional[str] = ..., data: _Optional[bytes] = ..., ints: _Optional[_Iterable[int]] = ..., floats: _Optional[_Iterable[float]] = ...) -> None: ...
