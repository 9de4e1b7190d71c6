"""The payload codec: how a value sent from one role to another becomes bytes.

Wire format: a payload is one serialized ``choreo.values.Value`` protobuf message
(``choreo/_proto/values.proto``). Exactly one member of its ``kind`` oneof is set:
``none``; ``bool_value``; ``int_value`` (sint64) or, outside the sint64 range,
``big_int`` (sign + big-endian magnitude); ``float_value`` (binary64: nan, inf and
-0.0 survive); ``str_value`` (``str_surrogates`` for a str with lone surrogates,
which protobuf strings cannot hold); ``bytes_value``; ``container`` (list, tuple,
set, frozenset or dict); ``dataclass`` (registered type name, field names in
``names``, values in ``items``); ``enum`` (registered type name, member name in
``member``); ``message`` (protobuf full name, serialized message in ``data``).
Container elements are nested Values in ``items``, or, when they are all ints that
fit a sint64, all strs or all floats, packed in ``ints`` / ``names`` / ``floats``. A
dict is ``names`` (its keys, when all are strs) + ``items`` (its values), or else
``items`` alone as key, value, key, value... One level of Python nesting is one
level of protobuf nesting.

Safety rule: decoding never runs code chosen by the bytes. No pickle, marshal, eval,
exec or import ever sees them. The decoder only builds the builtin types above,
classes registered with :func:`register` in this process (by calling the class with
its field values as keyword arguments) and protobuf messages whose descriptors are
already in the default descriptor pool. Anything else - unknown type names,
malformed, truncated or hostile bytes, nesting deeper than :data:`MAX_DEPTH` -
raises :class:`~choreo._errors.CodecError`, and nothing else.

Only exact types are accepted (``type(value)``, not ``isinstance``): a subclass of
``int`` or ``tuple`` (an unregistered ``IntEnum``, a ``namedtuple``) would come out
as a plain ``int`` or ``tuple`` on the other side, so it is refused instead.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable
from typing import Any, Final, TypeVar

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from choreo._errors import CodecError
from choreo._proto import values_pb2
from choreo._proto.values_pb2 import Value

__all__ = ["MAX_DEPTH", "decode", "encode", "register"]

T = TypeVar("T")

MAX_DEPTH: Final = 90
"""Most containers / dataclasses nested inside each other in one value.

Deeper values are refused by both :func:`encode` and :func:`decode`. It stays below
protobuf's own parser limit (100 nested messages) so that everything ``encode``
produces can be parsed.
"""

_LIST: Final = values_pb2.CONTAINER_LIST
_TUPLE: Final = values_pb2.CONTAINER_TUPLE
_SET: Final = values_pb2.CONTAINER_SET
_FROZENSET: Final = values_pb2.CONTAINER_FROZENSET
_DICT: Final = values_pb2.CONTAINER_DICT

_HINT: Final = "register it with @choreo.register if it is a dataclass or enum"
_POOL: Final = descriptor_pool.Default()


class _Fail(Exception):
    """A failure travelling up the value; containers add where it happened."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.where: list[str] = []  # innermost first

    def render(self) -> str:
        where = self.where[::-1]
        if len(where) > 12:
            where = [*where[:5], f"... {len(where) - 10} more levels ...", *where[-5:]]
        return f"{' -> '.join(where)}: {self.message}" if where else self.message


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _too_deep() -> _Fail:
    return _Fail(f"nested more than {MAX_DEPTH} levels deep (is the value cyclic?)")


# ----------------------------------------------------------------------- encoding
#
# An encoder fills ``out`` (a fresh Value, usually from ``parent.items.add()``, so
# nothing is copied) with ``value``. ``depth`` is the number of containers around it.

_Encoder = Callable[[Any, Value, int], None]


def _enc_none(value: None, out: Value, depth: int) -> None:
    out.none = True


def _enc_bool(value: bool, out: Value, depth: int) -> None:
    out.bool_value = value


def _enc_int(value: int, out: Value, depth: int) -> None:
    try:
        out.int_value = value
    except ValueError:  # outside the sint64 range
        big = out.big_int
        if value < 0:
            big.negative = True
            value = -value
        big.magnitude = value.to_bytes((value.bit_length() + 7) // 8, "big")


def _enc_float(value: float, out: Value, depth: int) -> None:
    out.float_value = value


def _enc_str(value: str, out: Value, depth: int) -> None:
    try:
        out.str_value = value
    except UnicodeEncodeError:  # lone surrogates: not valid UTF-8
        out.str_surrogates = value.encode("utf-8", "surrogatepass")


def _enc_bytes(value: bytes, out: Value, depth: int) -> None:
    out.bytes_value = value


def _encoder_for(value: object) -> _Encoder:
    """The encoder of a value whose exact type is not in ``_ENCODERS`` yet (or never)."""
    cls = type(value)
    if isinstance(value, Message):
        descriptor = value.DESCRIPTOR
        if descriptor.file.pool is not _POOL:
            raise _Fail(
                f"cannot send protobuf message {descriptor.full_name}: its type is not "
                "in the default descriptor pool, so a receiver could not decode it"
            )
        _ENCODERS[cls] = _enc_message  # next time: the fast path
        return _enc_message
    name = cls.__qualname__
    if issubclass(cls, enum.Enum):
        problem = f"cannot send a value of type {name}: it is an enum that is not registered"
        raise _Fail(f"{problem}; register it with @choreo.register")
    if dataclasses.is_dataclass(cls):
        problem = f"cannot send a value of type {name}: it is a dataclass that is not registered"
        raise _Fail(f"{problem}; register it with @choreo.register")
    for base in (bool, int, float, str, bytes, list, tuple, dict, set, frozenset):
        if issubclass(cls, base):
            raise _Fail(
                f"cannot send a value of type {name} (a subclass of {base.__name__}, which "
                f"would arrive as a plain {base.__name__}); convert it, or {_HINT}"
            )
    raise _Fail(f"cannot send a value of type {name}; {_HINT}")


def _enc_list(value: list[Any], out: Value, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    out.container = _LIST
    _enc_items(value, out, depth + 1, "list item {}")


def _enc_tuple(value: tuple[Any, ...], out: Value, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    out.container = _TUPLE
    _enc_items(value, out, depth + 1, "tuple item {}")


def _enc_set(value: set[Any], out: Value, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    out.container = _SET
    _enc_items(value, out, depth + 1, "set element")


def _enc_frozenset(value: frozenset[Any], out: Value, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    out.container = _FROZENSET
    _enc_items(value, out, depth + 1, "frozenset element")


def _enc_items(values: Any, out: Value, depth: int, what: str) -> None:
    if values:
        types = {*map(type, values)}
        if len(types) == 1:  # all elements of one exact type: maybe a packed field
            kind = types.pop()
            if kind is int:
                try:
                    out.ints.extend(values)
                    return
                except ValueError:  # some int does not fit a sint64
                    del out.ints[:]
            elif kind is str:
                try:
                    out.names.extend(values)
                    return
                except UnicodeEncodeError:  # lone surrogates
                    del out.names[:]
            elif kind is float:
                out.floats.extend(values)
                return
    add = out.items.add
    encoders = _ENCODERS
    try:
        for item in values:
            sub = add()  # first, so that len(out.items) - 1 is the failing item's index
            (encoders.get(type(item)) or _encoder_for(item))(item, sub, depth)
    except _Fail as failure:
        failure.where.append(what.format(len(out.items) - 1))  # the item that failed
        raise


def _enc_dict(value: dict[Any, Any], out: Value, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    out.container = _DICT
    depth += 1
    add = out.items.add
    encoders = _ENCODERS
    key: Any = None
    if value and {*map(type, value)} == {str}:  # the usual case: keys in `names`
        try:
            out.names.extend(value)
        except UnicodeEncodeError:  # lone surrogates
            del out.names[:]
        else:
            try:
                for key, item in value.items():  # noqa: B007  # key: for the error
                    sub = add()
                    (encoders.get(type(item)) or _encoder_for(item))(item, sub, depth)
            except _Fail as failure:
                failure.where.append(f"dict value at key {_safe_repr(key)}")
                raise
            return
    try:
        for key, item in value.items():
            sub = add()  # first, so that len(out.items) tells a key from a value
            (encoders.get(type(key)) or _encoder_for(key))(key, sub, depth)
            sub = add()
            (encoders.get(type(item)) or _encoder_for(item))(item, sub, depth)
    except _Fail as failure:
        done = len(out.items)
        if done % 2:
            failure.where.append(f"dict key at position {done // 2}")
        else:
            failure.where.append(f"dict value at key {_safe_repr(key)}")
        raise


def _safe_repr(value: object) -> str:
    try:
        return _short(repr(value))
    except Exception:
        return f"<{type(value).__qualname__}>"


def _enc_message(value: Message, out: Value, depth: int) -> None:
    out.message = value.DESCRIPTOR.full_name
    try:
        out.data = value.SerializeToString()
    except Exception as error:  # e.g. a proto2 message with a required field unset
        failure = _Fail(f"cannot serialize protobuf message {out.message}: {error}")
        raise failure from error


def _dataclass_encoder(name: str, qualname: str, fields: tuple[str, ...]) -> _Encoder:
    def encode_dataclass(value: Any, out: Value, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        out.dataclass = name
        out.names.extend(fields)
        depth += 1
        add = out.items.add
        encoders = _ENCODERS
        field = ""
        try:
            for field in fields:
                item = getattr(value, field)
                (encoders.get(type(item)) or _encoder_for(item))(item, add(), depth)
        except _Fail as failure:
            failure.where.append(f"{qualname} field {field!r}")
            raise

    return encode_dataclass


def _enum_encoder(name: str) -> _Encoder:
    def encode_enum(value: Any, out: Value, depth: int) -> None:
        out.enum = name
        out.member = value._name_ or ""  # None for a nameless composite Flag, e.g. F(0)

    return encode_enum


_ENCODERS: dict[type, _Encoder] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    str: _enc_str,
    bytes: _enc_bytes,
    list: _enc_list,
    tuple: _enc_tuple,
    dict: _enc_dict,
    set: _enc_set,
    frozenset: _enc_frozenset,
}
"""Exact type -> encoder; registered classes and seen protobuf message types are added."""


def encode(value: object) -> bytes:
    """Encode a value to send it to another role.

    Args:
        value: None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset,
            an instance of a class registered with :func:`register`, or a protobuf
            message, nested in each other at most :data:`MAX_DEPTH` levels deep.

    Returns:
        The payload: a serialized ``choreo.values.Value``; :func:`decode` gives back an
        equal value of the same types.

    Raises:
        CodecError: the value (or something inside it) cannot be sent. The message says
            where, e.g. ``dict value at key 'a' -> list item 2: cannot send a value of
            type Foo; ...``.
    """
    out = Value()
    try:
        (_ENCODERS.get(type(value)) or _encoder_for(value))(value, out, 0)
        return out.SerializeToString()
    except _Fail as failure:
        raise CodecError(failure.render()) from failure.__cause__


# ----------------------------------------------------------------------- decoding

_Decoder = Callable[[Value, int], Any]

# Kinds whose field already holds the Python value.
_PLAIN: Final = frozenset({"bool_value", "int_value", "float_value", "str_value", "bytes_value"})


def _decode_value(msg: Value, depth: int) -> Any:
    kind = msg.WhichOneof("kind")
    if kind in _PLAIN:
        return getattr(msg, kind)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise _Fail("a value with no kind set (empty, or from an incompatible choreo)")
    return decoder(msg, depth)


def _dec_none(msg: Value, depth: int) -> None:
    return None


def _dec_big_int(msg: Value, depth: int) -> int:
    big = msg.big_int
    magnitude = int.from_bytes(big.magnitude, "big")
    return -magnitude if big.negative else magnitude


def _dec_str_surrogates(msg: Value, depth: int) -> str:
    try:
        return msg.str_surrogates.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as error:
        raise _Fail(f"a str that is not valid (surrogate-passing) UTF-8: {error}") from error


def _dec_container(msg: Value, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    shape = msg.container
    build = _BUILDERS.get(shape)
    if build is None:
        raise _Fail(f"unknown container kind {shape}")
    depth += 1
    # Each access to a repeated field costs, so look only as far as needed; a decoder
    # takes the first non-empty of items / ints / names / floats (see values.proto).
    if shape == _DICT:
        values = [_decode_value(m, depth) for m in msg.items]
        names = msg.names
        if names:
            if len(names) != len(values):
                raise _Fail(f"a dict with {len(names)} str keys but {len(values)} values")
            return dict(zip(names, values, strict=True))
        if len(values) % 2:
            raise _Fail("a dict with an odd number of keys and values")
        elements: Any = zip(values[::2], values[1::2], strict=True)
    else:
        items = msg.items
        if items:
            elements = [_decode_value(m, depth) for m in items]
            if shape == _LIST:
                return elements
        else:
            elements = msg.ints or msg.names or msg.floats
    try:
        return build(elements)
    except Exception as error:  # unhashable key or element, a failing __hash__ / __eq__
        kind = _BUILDER_NAMES[shape]
        raise _Fail(f"cannot build a {kind}: {type(error).__name__}: {error}") from error


_BUILDERS: Final[dict[int, Callable[[Any], Any]]] = {
    _LIST: list,
    _TUPLE: tuple,
    _SET: set,
    _FROZENSET: frozenset,
    _DICT: dict,
}
_BUILDER_NAMES: Final = {builder: f.__name__ for builder, f in _BUILDERS.items()}


def _dec_dataclass(msg: Value, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    name = msg.dataclass
    known = _DATACLASSES.get(name)
    if known is None:
        raise _Fail(
            f"unknown dataclass {_short(repr(name))}: only classes registered with "
            "@choreo.register in the receiving process can be received"
        )
    cls, fields = known
    names = msg.names
    items = msg.items
    if len(names) != len(items):
        raise _Fail(f"{name}: {len(names)} field names but {len(items)} field values")
    depth += 1
    kwargs: dict[str, Any] = {}
    for field, item in zip(names, items, strict=True):
        if field not in fields:
            raise _Fail(f"{name} has no field {_short(repr(field))}")
        if field in kwargs:
            raise _Fail(f"{name}: field {field!r} given twice")
        kwargs[field] = _decode_value(item, depth)
    try:
        return cls(**kwargs)
    except Exception as error:
        failure = _Fail(f"cannot rebuild a {name}: {type(error).__name__}: {error}")
        raise failure from error


def _dec_enum(msg: Value, depth: int) -> Any:
    name = msg.enum
    known = _ENUMS.get(name)
    if known is None:
        raise _Fail(
            f"unknown enum {_short(repr(name))}: only enums registered with "
            "@choreo.register in the receiving process can be received"
        )
    cls, members = known
    member = msg.member
    found = members.get(member)
    if found is not None:
        return found
    if issubclass(cls, enum.Flag):  # a composite flag, "A|B", or "" for no flag
        combined: Any = cls(0)
        for part in member.split("|") if member else ():
            flag = members.get(part)
            if flag is None:
                break
            combined |= flag
        else:
            return combined
    raise _Fail(f"enum {name} has no member {_short(repr(member))}")


def _dec_message(msg: Value, depth: int) -> Message:
    name = msg.message
    cls = _MESSAGE_CLASSES.get(name)
    if cls is None:
        try:
            cls = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(name))
        except Exception:
            raise _Fail(
                f"unknown protobuf message type {_short(repr(name))}: import its "
                "generated _pb2 module in the receiving process"
            ) from None
        _MESSAGE_CLASSES[name] = cls
    try:
        return cls.FromString(msg.data)
    except Exception as error:
        raise _Fail(f"malformed protobuf message {name}: {error}") from error


_DECODERS: dict[str | None, _Decoder] = {
    "none": _dec_none,
    "big_int": _dec_big_int,
    "str_surrogates": _dec_str_surrogates,
    "container": _dec_container,
    "dataclass": _dec_dataclass,
    "enum": _dec_enum,
    "message": _dec_message,
}
_MESSAGE_CLASSES: dict[str, type[Message]] = {}


def decode(data: bytes) -> object:
    """Decode a payload made by :func:`encode`.

    Only builtin types, classes registered with :func:`register` in this process and
    protobuf messages already in the default descriptor pool are ever built.

    Args:
        data: the payload bytes, possibly from an untrusted peer.

    Returns:
        The value, with the same types as the one that was encoded.

    Raises:
        CodecError: the bytes are malformed, truncated or hostile, name a class that is
            not registered here, or nest deeper than :data:`MAX_DEPTH`. No other
            exception escapes.
    """
    try:
        msg = Value.FromString(data)
    except Exception as error:  # DecodeError; TypeError if data is not bytes-like
        raise CodecError(f"malformed payload: {error}") from error
    kind = msg.WhichOneof("kind")
    if kind in _PLAIN:  # fast path for a lone scalar
        return getattr(msg, kind)
    try:
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise _Fail("a value with no kind set (empty, or from an incompatible choreo)")
        return decoder(msg, 0)
    except _Fail as failure:
        raise CodecError(f"malformed payload: {failure.render()}") from failure.__cause__
    except RecursionError:  # only if called with the stack already nearly full
        raise CodecError("malformed payload: nested too deeply") from None


# ------------------------------------------------------------------- registration

_REGISTERED: dict[str, type] = {}
_DATACLASSES: dict[str, tuple[type, frozenset[str]]] = {}
_ENUMS: dict[str, tuple[type[enum.Enum], dict[str, enum.Enum]]] = {}


def register(cls: type[T]) -> type[T]:
    """Allow instances of a dataclass or an Enum subclass to be sent between roles.

    Use it as a class decorator, in the code of every role that sends or receives the
    class. The class is known on the wire by ``module.qualname``. A dataclass is sent
    as its ``init`` fields and rebuilt by calling the class with them as keyword
    arguments (so ``__post_init__`` runs; field types are not checked). An enum member
    is sent by name.

    Args:
        cls: the class.

    Returns:
        ``cls`` itself. Registering the same class again is allowed and does nothing.

    Raises:
        CodecError: ``cls`` is neither a dataclass nor an Enum, a dataclass's
            ``__init__`` does not take exactly its ``init`` fields, or another class
            is already registered under the same name.
    """
    if not isinstance(cls, type):
        raise CodecError(f"@choreo.register expects a class, got {_safe_repr(cls)}")
    name = f"{cls.__module__}.{cls.__qualname__}"
    known = _REGISTERED.get(name)
    if known is cls:
        return cls
    if known is not None:
        raise CodecError(
            f"cannot register {cls!r}: a different class is already registered as "
            f"{name!r}; two classes sent between roles need different names"
        )
    encoder: _Encoder
    if issubclass(cls, enum.Enum):
        _ENUMS[name] = (cls, dict(cls.__members__))
        encoder = _enum_encoder(name)
    elif dataclasses.is_dataclass(cls):
        fields = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        _check_init(cls, name, fields)
        _DATACLASSES[name] = (cls, frozenset(fields))
        encoder = _dataclass_encoder(name, cls.__qualname__, fields)
    else:
        raise CodecError(
            f"cannot register {cls!r}: only dataclasses and Enum subclasses can be "
            "registered (send other objects as builtin values or protobuf messages)"
        )
    _REGISTERED[name] = cls
    _ENCODERS[cls] = encoder
    return cls


def _check_init(cls: type, name: str, fields: tuple[str, ...]) -> None:
    """Refuse a dataclass that ``cls(**fields)`` could not rebuild (InitVar, own init)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to check; decoding will tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        accepted = set(fields)
    else:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = {p.name for p in parameters if p.kind in kinds}
    required = {
        p.name
        for p in parameters
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    unsent = sorted(required - set(fields))
    refused = sorted(set(fields) - accepted)
    if unsent or refused:
        raise CodecError(
            f"cannot register {name}: its __init__ "
            + (f"requires {unsent}, which are not init fields" if unsent else "")
            + (" and " if unsent and refused else "")
            + (f"does not accept the init fields {refused}" if refused else "")
            + ", so a received value could not be rebuilt"
        )
