"""The payload codec: round trips, type fidelity, error paths and hostile bytes."""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import os
import pickle
import random
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from choreo._codec import MAX_DEPTH, decode, encode, register
from choreo._errors import CodecError
from choreo._proto.values_pb2 import CONTAINER_DICT as DICT
from choreo._proto.values_pb2 import CONTAINER_LIST as LIST
from choreo._proto.values_pb2 import BigInt, Value

# ---------------------------------------------------------------- registered types


@register
class Color(enum.Enum):
    RED = 1
    GREEN = 2
    CRIMSON = 1  # an alias of RED


@register
class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@register
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@register
class Mode(enum.StrEnum):
    FAST = "fast"
    SAFE = "safe"


@register
@dataclass
class Box:
    label: str
    content: Any
    extra: Any = None


@register
@dataclass(frozen=True)
class Pair:
    left: Any
    right: Any


@register
@dataclass(slots=True, kw_only=True)
class Derived:
    base: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.doubled = 2 * self.base


@register
@dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


@dataclass
class Unregistered:
    x: int


class Shade(enum.Enum):  # not registered
    DARK = 1


class Foo:
    pass


Point = collections.namedtuple("Point", "x y")

# ------------------------------------------------------------- structural equality


def canon(x: Any) -> Any:
    """A comparable form of ``x`` that keeps exact types, nan and the sign of 0.0."""
    t = type(x)
    if t is float:
        return ("float", "nan" if math.isnan(x) else (x, math.copysign(1.0, x)))
    if t is list or t is tuple:
        return (t.__name__, tuple(canon(i) for i in x))
    if t is dict:
        return ("dict", tuple((canon(k), canon(v)) for k, v in x.items()))
    if t is set or t is frozenset:
        return (t.__name__, tuple(sorted((canon(i) for i in x), key=repr)))
    if dataclasses.is_dataclass(x):
        return (t.__qualname__, tuple(canon(getattr(x, f.name)) for f in dataclasses.fields(x)))
    if isinstance(x, enum.Enum):
        return (t.__qualname__, x.name, canon(x.value))
    if isinstance(x, Message):
        return (x.DESCRIPTOR.full_name, x.SerializeToString(deterministic=True))
    assert t in (type(None), bool, int, str, bytes), t
    return (t.__name__, x)


def roundtrip(value: Any) -> Any:
    data = encode(value)
    assert isinstance(data, bytes)
    return decode(data)


def assert_roundtrips(value: Any) -> None:
    assert canon(roundtrip(value)) == canon(value)


# ------------------------------------------------------------------- strategies

big_ints = st.one_of(
    st.integers(),
    st.integers(0, 300).flatmap(lambda bits: st.integers(-(2**bits), 2**bits)),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -(2**64), 0, -1]),
)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, math.nan])
texts = st.text() | st.text(st.characters(categories=["Cs", "Ll", "Nd"]))  # with surrogates
flags = st.sampled_from([Perm.R, Perm.R | Perm.W, Perm.R | Perm.W | Perm.X, Perm(0)])
enums = st.sampled_from([Color.RED, Color.GREEN, Level.LOW, Level.HIGH, Mode.FAST]) | flags
messages = st.one_of(
    st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(-(2**40), 2**40),
        nanos=st.integers(0, 999_999_999),
    ),
    st.builds(duration_pb2.Duration, seconds=st.integers(-(2**40), 2**40)),
    st.builds(wrappers_pb2.StringValue, value=st.text()),
)
# The composite wrappers keep the reprs of the recursive strategies short (hypothesis
# warns about huge reprs, and warnings are errors here).
_HASHABLE_LEAVES = st.one_of(
    st.none(), st.booleans(), big_ints, floats, texts, st.binary(max_size=20), enums
)


@st.composite
def hashable_leaves(draw: st.DrawFn) -> Any:
    return draw(_HASHABLE_LEAVES)


_HASHABLES = st.recursive(
    hashable_leaves(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.frozensets(inner, max_size=4),
        st.tuples(inner, inner).map(lambda lr: Pair(*lr)),
    ),
    max_leaves=8,
)


@st.composite
def hashables_(draw: st.DrawFn) -> Any:
    return draw(_HASHABLES)


hashables = hashables_()
values = st.recursive(
    st.one_of(hashables, messages),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.dictionaries(texts, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.tuples(texts, inner, inner).map(lambda args: Box(*args)),
        st.builds(Derived, base=st.integers()),
    ),
    max_leaves=20,
)
# Homogeneous containers: the packed wire forms.
packed = st.one_of(
    st.lists(big_ints),
    st.lists(st.integers(-(2**63), 2**63 - 1)).map(tuple),
    st.lists(floats),
    st.lists(texts).map(tuple),
    st.sets(st.integers()),
    st.frozensets(texts),
    st.dictionaries(texts, st.integers()),
)

# ------------------------------------------------------------------- round trips


@given(values)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_any_value(value: Any) -> None:
    assert_roundtrips(value)


@given(packed)
@settings(max_examples=200)
def test_roundtrip_homogeneous_containers(value: Any) -> None:
    assert_roundtrips(value)


@given(big_ints)
def test_roundtrip_ints(value: int) -> None:
    out = roundtrip(value)
    assert type(out) is int and out == value


@given(floats)
def test_roundtrip_floats_keep_nan_inf_and_signed_zero(value: float) -> None:
    out = roundtrip(value)
    assert type(out) is float
    if math.isnan(value):
        assert math.isnan(out)
    else:
        assert out == value and math.copysign(1.0, out) == math.copysign(1.0, value)


@given(texts)
def test_roundtrip_str_including_lone_surrogates(value: str) -> None:
    assert roundtrip(value) == value


@given(messages)
def test_roundtrip_protobuf_messages(value: Message) -> None:
    out = roundtrip(value)
    assert type(out) is type(value) and out == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        10**100,
        -(10**100),
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        "",
        "héllo ✓",
        "lone \ud800 surrogate",
        b"",
        b"\x00\xff",
        [],
        (),
        {},
        set(),
        frozenset(),
        [1, 2**70, -3],  # an int that does not fit: not packed
        ["a", "\udfff"],  # a str with a surrogate: not packed
        {"a": 1, "\ud800": 2},  # a dict key with a surrogate
        {1: "a", (2, 3): [4], None: {5}, frozenset({6}): 7.5, Color.RED: b"x"},
        ((((),),),),
        [Color.CRIMSON, Perm.R | Perm.X, Perm(0), Level.HIGH, Mode.SAFE],
        Box("b", [Box("inner", {"k": (1, 2)})], extra={Pair(1, "2")}),
        Derived(base=21),
        timestamp_pb2.Timestamp(seconds=1, nanos=2),
        [duration_pb2.Duration(seconds=-3), Value(int_value=5)],
    ],
)
def test_roundtrip_examples(value: Any) -> None:
    assert_roundtrips(value)


def test_nan_roundtrips_inside_containers() -> None:
    out = roundtrip([math.nan, {"x": math.nan}, (math.nan, 1)])
    assert math.isnan(out[0]) and math.isnan(out[1]["x"]) and math.isnan(out[2][0])


def test_derived_init_false_field_is_recomputed() -> None:
    out = roundtrip(Derived(base=4))
    assert type(out) is Derived and out.doubled == 8


def test_enum_alias_decodes_to_the_canonical_member() -> None:
    assert roundtrip(Color.CRIMSON) is Color.RED


def test_dict_order_is_preserved() -> None:
    value = {"z": 1, "a": 2, 3: 3, "m": 4}
    assert list(roundtrip(value)) == ["z", "a", 3, "m"]
    assert list(roundtrip({"z": 1, "a": 2, "m": 3})) == ["z", "a", "m"]


# ---------------------------------------------------------------- type fidelity


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, bool),
        (1, int),
        (1.0, float),
        ((1, 2), tuple),
        ([1, 2], list),
        ({1, 2}, set),
        (frozenset({1, 2}), frozenset),
        ("1", str),
        (b"1", bytes),
        (Level.LOW, Level),
        (Mode.FAST, Mode),
    ],
)
def test_exact_types_survive(value: Any, kind: type) -> None:
    assert type(roundtrip(value)) is kind


def test_bool_stays_bool_inside_containers() -> None:
    out = roundtrip([1, True, 0, False])
    assert [type(x) for x in out] == [int, bool, int, bool]
    out = roundtrip([True, False])  # all bools: never packed as ints
    assert [type(x) for x in out] == [bool, bool]
    assert [type(x) for x in roundtrip({True: 1, 2: False})] == [bool, int]


def test_int_and_float_elements_stay_distinct() -> None:
    out = roundtrip([1, 1.0, 2.5, 3])
    assert [type(x) for x in out] == [int, float, float, int]


def test_set_and_frozenset_stay_distinct() -> None:
    out = roundtrip([{1}, frozenset({1}), {frozenset({"a"})}])
    assert [type(x) for x in out] == [set, frozenset, set]
    assert type(next(iter(out[2]))) is frozenset


# ---------------------------------------------------------------- wire format


def test_wire_format_is_stable() -> None:
    # Changing these is a wire-format change: peers running older code break.
    assert encode(None) == b"\x08\x01"
    assert encode(True) == b"\x10\x01"
    assert encode(1) == b"\x18\x02"
    assert encode(-1) == b"\x18\x01"
    assert encode("a") == b"\x32\x01a"
    assert encode([1, 2]) == b"\x40\x01\x8a\x01\x02\x02\x04"
    assert encode(2**64) == b"\x22\x0b\x12\x09\x01" + bytes(8)


def test_homogeneous_containers_use_the_packed_fields() -> None:
    assert list(Value.FromString(encode([1, 2, 3])).ints) == [1, 2, 3]
    assert list(Value.FromString(encode(("a", "b"))).names) == ["a", "b"]
    assert list(Value.FromString(encode([0.5])).floats) == [0.5]
    msg = Value.FromString(encode({"a": 1, "b": [2]}))
    assert list(msg.names) == ["a", "b"] and len(msg.items) == 2
    assert len(encode(list(range(100)))) < 250
    assert not Value.FromString(encode([True, False])).ints


# -------------------------------------------------------------- unsupported values


def test_unsupported_value_error_names_the_path() -> None:
    with pytest.raises(CodecError) as info:
        encode({"a": [1, 2, Foo()]})
    assert str(info.value) == (
        "dict value at key 'a' -> list item 2: cannot send a value of type Foo; "
        "register it with @choreo.register if it is a dataclass or enum"
    )


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (Foo(), "cannot send a value of type Foo;"),
        ([0, (1, Foo())], "list item 1 -> tuple item 1: cannot send"),
        ({1: 2, Foo(): 3}, "dict key at position 1: cannot send"),
        ({1: {"k": [Foo()]}}, "dict value at key 1 -> dict value at key 'k' -> list item 0: "),
        ({frozenset({Foo()})}, "set element -> frozenset element: cannot send"),
        (Box("x", [Foo()]), "Box field 'content' -> list item 0: cannot send"),
        (Pair(1, {"a": Foo()}), "Pair field 'right' -> dict value at key 'a': cannot send"),
        ([1.5, Foo()], "list item 1: cannot send"),
        (["a", Foo()], "list item 1: cannot send"),
        ({"a": 1, "b": Foo()}, "dict value at key 'b': cannot send"),
        (Unregistered(1), "Unregistered: it is a dataclass that is not registered"),
        ([Shade.DARK], "list item 0: cannot send a value of type Shade: it is an enum that"),
        (Point(1, 2), "Point (a subclass of tuple"),
        (bytearray(b"x"), "cannot send a value of type bytearray"),
        (object, "cannot send a value of type type"),
        (lambda: 0, "cannot send a value of type function"),
    ],
)
def test_unsupported_values_raise_codec_error(value: Any, where: str) -> None:
    with pytest.raises(CodecError) as info:
        encode(value)
    assert where in str(info.value)


def test_unsupported_subclass_of_int_or_str_is_refused() -> None:
    class MyInt(int):
        pass

    class MyStr(str):
        __slots__ = ()

    for value in (MyInt(3), [MyInt(3)], MyStr("x"), {MyStr("k"): 1}, [MyStr("x")]):
        with pytest.raises(CodecError, match="subclass of"):
            encode(value)


def test_message_outside_the_default_pool_is_refused() -> None:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="private.proto", package="private")
    file.message_type.add(name="Secret")
    pool.Add(file)
    secret = message_factory.GetMessageClass(pool.FindMessageTypeByName("private.Secret"))
    with pytest.raises(CodecError, match="not in the default descriptor pool"):
        encode([secret()])


def test_cyclic_and_too_deep_values_raise_codec_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(CodecError, match="cyclic"):
        encode(cyclic)
    cyclic_dict: dict[str, Any] = {}
    cyclic_dict["self"] = cyclic_dict
    with pytest.raises(CodecError, match="nested more than"):
        encode(cyclic_dict)
    box = Box("b", None)
    box.content = box
    with pytest.raises(CodecError, match="nested more than"):
        encode(box)


def nested_list(depth: int, leaf: Any = 7) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_limit_roundtrips() -> None:
    for leaf in (7, 2**100, -(2**100), "s", [1, 2], {"k": "v"}, Color.RED):
        assert_roundtrips(nested_list(MAX_DEPTH - 1, leaf))
    assert_roundtrips(nested_list(MAX_DEPTH))
    boxes: Any = 2**100
    for _ in range(MAX_DEPTH):
        boxes = Box("b", boxes)
    assert_roundtrips(boxes)
    with pytest.raises(CodecError, match=f"nested more than {MAX_DEPTH} levels"):
        encode(Box("b", boxes))
    with pytest.raises(CodecError, match=f"nested more than {MAX_DEPTH} levels"):
        encode(nested_list(MAX_DEPTH + 1))


# ------------------------------------------------------------------ registration


def test_register_same_class_twice_is_fine() -> None:
    assert register(Box) is Box
    assert register(Color) is Color


def test_register_two_classes_with_one_name_fails() -> None:
    def make() -> type:
        @dataclass
        class Dup:
            x: int

        return Dup

    first, second = make(), make()
    assert first is not second and first.__qualname__ == second.__qualname__
    register(first)
    with pytest.raises(CodecError, match="already registered"):
        register(second)
    assert type(roundtrip(first(1))) is first


@pytest.mark.parametrize("target", [Foo, int, timestamp_pb2.Timestamp, 3])
def test_register_refuses_non_dataclass_non_enum(target: Any) -> None:
    with pytest.raises(CodecError):
        register(target)


def test_register_refuses_dataclass_that_cannot_be_rebuilt() -> None:
    @dataclass
    class NeedsInitVar:
        x: int
        secret: dataclasses.InitVar[str]

    with pytest.raises(CodecError, match="requires"):
        register(NeedsInitVar)

    @dataclass(init=False)
    class OwnInit:
        x: int

        def __init__(self) -> None:
            self.x = 1

    with pytest.raises(CodecError, match="does not accept"):
        register(OwnInit)


# --------------------------------------------------------------- hostile decoding


def crafted(**fields: Any) -> bytes:
    return Value(**fields).SerializeToString()


def box_value(name: str, **kwargs: Any) -> bytes:
    msg = Value(dataclass=name)
    for field, value in kwargs.items():
        msg.names.append(field)
        msg.items.add().MergeFromString(encode(value))
    return msg.SerializeToString()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no kind"),
        (b"\xff", "malformed payload"),
        (crafted(container=0), "unknown container"),
        (crafted(container=99), "unknown container"),
        (crafted(container=5, items=[Value(int_value=1)]), "odd number"),
        (crafted(container=5, names=["a", "b"], items=[Value(int_value=1)]), "2 str keys"),
        (crafted(container=3, items=[Value(container=LIST)]), "cannot build a set"),
        (crafted(container=5, items=[Value(container=DICT), Value(none=True)]), "dict"),
        (crafted(str_surrogates=b"\xff"), "surrogate"),
        (crafted(items=[Value(int_value=1)]), "no kind"),
        (crafted(container=1, items=[Value()]), "no kind"),
        (box_value("tests.test_codec.Unregistered", x=1), "unknown dataclass"),
        (box_value("os.system", command="true"), "unknown dataclass"),
        (box_value("builtins.eval", source="1"), "unknown dataclass"),
        (box_value(f"{Box.__module__}.Box", label="x"), "cannot rebuild"),
        (box_value(f"{Box.__module__}.Box", label="x", content=1, nope=2), "no field 'nope'"),
        (box_value(f"{Box.__module__}.Box", label="x", content=1, __class__=2), "no field"),
        (box_value(f"{Positive.__module__}.Positive", n=-1), "n must be positive"),
        (box_value(f"{Derived.__module__}.Derived", base=1, doubled=3), "no field 'doubled'"),
        (crafted(dataclass=f"{Box.__module__}.Box", names=["label"]), "1 field names but 0"),
        (
            crafted(
                dataclass=f"{Pair.__module__}.Pair",
                names=["left", "left"],
                items=[Value(none=True)] * 2,
            ),
            "given twice",
        ),
        (crafted(enum=f"{Color.__module__}.Color", member="BLUE"), "no member 'BLUE'"),
        (crafted(enum=f"{Color.__module__}.Color", member="__class__"), "no member"),
        (crafted(enum=f"{Color.__module__}.Color", member=""), "no member"),
        (crafted(enum=f"{Perm.__module__}.Perm", member="R|Q"), "no member"),
        (crafted(enum=f"{Shade.__module__}.Shade", member="DARK"), "unknown enum"),
        (crafted(message="no.such.Message"), "unknown protobuf message"),
        (crafted(message="google.protobuf.Timestamp", data=b"\xff"), "malformed protobuf"),
    ],
)
def test_crafted_payloads_are_rejected(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode(data)


def test_tolerated_crafted_payloads() -> None:
    # Non-canonical but harmless forms decode to the obvious value.
    assert decode(crafted(big_int=BigInt(negative=True, magnitude=b"\x00\x05"))) == -5
    assert decode(crafted(container=2, ints=[1], names=["ignored"])) == (1,)
    assert decode(crafted(enum=f"{Perm.__module__}.Perm", member="R|W")) == Perm.R | Perm.W


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_is_rejected_and_nothing_runs(protocol: int, tmp_path: Any) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Evil(), protocol=protocol)
    with pytest.raises(CodecError):
        decode(payload)
    # Smuggled inside a valid payload it is just bytes, or a malformed message.
    assert decode(crafted(bytes_value=payload)) == payload
    with pytest.raises(CodecError):
        decode(crafted(message="google.protobuf.Timestamp", data=payload))
    assert not marker.exists()


def nested_bytes(depth: int, leaf: bytes = b"\x18\x0e") -> bytes:
    """A Value of ``depth`` nested one-item lists, built without protobuf."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            low, n = n & 0x7F, n >> 7
            out.append(low | (0x80 if n else 0))
            if not n:
                return bytes(out)

    data = leaf
    for _ in range(depth):
        data = b"\x40\x01\x6a" + varint(len(data)) + data
    return data


def test_nesting_is_limited_on_decode() -> None:
    assert decode(nested_bytes(MAX_DEPTH)) == nested_list(MAX_DEPTH)
    for depth in (MAX_DEPTH + 1, 120, 5000):
        with pytest.raises(CodecError):
            decode(nested_bytes(depth))
    with pytest.raises(CodecError, match=f"nested more than {MAX_DEPTH}"):
        decode(nested_bytes(MAX_DEPTH + 1))


@pytest.mark.parametrize("data", [None, "text", 3, [b"x"]])
def test_decode_of_non_bytes_raises_codec_error(data: Any) -> None:
    with pytest.raises(CodecError):
        decode(data)


def decodes_or_codec_error(data: bytes) -> None:
    try:
        decode(data)
    except CodecError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=500)
@example(b"\x40\x05\x72\x01a")  # a str-keyed dict with a key but no value
@example(b"\x4a\x00")  # a dataclass with an empty name
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    decodes_or_codec_error(data)


@given(values, st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_encodings_decode_or_raise_codec_error(value: Any, data: st.DataObject) -> None:
    encoded = encode(value)
    cut = data.draw(st.integers(0, max(len(encoded) - 1, 0)))
    decodes_or_codec_error(encoded[:cut])


@given(values, st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_bit_flipped_encodings_decode_or_raise_codec_error(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    flips = data.draw(st.lists(st.integers(0, len(encoded) * 8 - 1), min_size=1, max_size=3))
    for bit in flips:
        encoded[bit // 8] ^= 1 << (bit % 8)
    decodes_or_codec_error(bytes(encoded))


_NAMES = [
    f"{Box.__module__}.Box",
    f"{Pair.__module__}.Pair",
    f"{Positive.__module__}.Positive",
    f"{Color.__module__}.Color",
    f"{Perm.__module__}.Perm",
    "google.protobuf.Timestamp",
    "choreo.values.Value",
    "os.system",
    "",
]
_FIELDS = ["label", "content", "extra", "left", "right", "n", "RED", "R|W", "x", ""]


def _random_value_leaf(draw: st.DrawFn) -> Value:
    kind = draw(st.sampled_from(["int_value", "str_value", "none", "dataclass", "enum", "message"]))
    if kind == "int_value":
        return Value(int_value=draw(st.integers(-5, 5)))
    if kind == "str_value":
        return Value(str_value=draw(st.sampled_from(_FIELDS)))
    if kind == "none":
        return Value(none=True)
    if kind == "message":
        return Value(message=draw(st.sampled_from(_NAMES)), data=draw(st.binary(max_size=8)))
    name = draw(st.sampled_from(_NAMES))
    msg = Value(member=draw(st.sampled_from(_FIELDS)))
    setattr(msg, kind, name)
    return msg


@st.composite
def random_value_messages(draw: st.DrawFn, depth: int = 0) -> Value:
    """Structurally plausible but arbitrary Values: every shape, name and field mix."""
    if depth >= 3 or draw(st.booleans()):
        msg = _random_value_leaf(draw)
    else:
        if draw(st.booleans()):
            msg = Value()
            msg.container = draw(st.integers(0, 6))  # type: ignore[assignment]  # also bad
        else:
            msg = Value(dataclass=draw(st.sampled_from(_NAMES)))
        for _ in range(draw(st.integers(0, 3))):
            msg.items.add().CopyFrom(draw(random_value_messages(depth + 1)))
    msg.names.extend(draw(st.lists(st.sampled_from(_FIELDS), max_size=3)))
    msg.ints.extend(draw(st.lists(st.integers(-3, 3), max_size=2)))
    msg.floats.extend(draw(st.lists(st.floats(), max_size=2)))
    return msg


@given(random_value_messages())
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_value_messages_decode_or_raise_codec_error(msg: Value) -> None:
    decodes_or_codec_error(msg.SerializeToString())


def test_decode_never_leaks_other_exceptions_on_a_random_corpus() -> None:
    rng = random.Random(1234)
    corpus = [
        encode(v)
        for v in (
            {"a": [1, 2.5, "x", None]},
            Box("l", {Pair(1, 2): (Color.RED, Perm.W)}),
            [timestamp_pb2.Timestamp(seconds=5), {frozenset({1, 2}): {3}}],
        )
    ]
    for _ in range(3000):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        decodes_or_codec_error(bytes(data))
