"""Sub-choreography calls: by name, without `*`/`**`."""

from choreo import Role, choreography


@choreography
def hello(p: Role) -> None:
    with p:
        print("hello")


TABLE = [hello]


@choreography
def star_call(alice: Role) -> None:
    hello(*[alice])  # error: `*`/`**` arguments are not supported in a sub-choreography call
    hello(alice, **{})  # error: `*`/`**` arguments are not supported in a sub-choreography call


@choreography
def indirect_call(alice: Role) -> None:
    TABLE[0](alice)  # error: roles can only be passed to a `@choreography` function called by name
