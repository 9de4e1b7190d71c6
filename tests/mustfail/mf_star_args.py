"""A choreography's parameters are named roles and inputs: no *args or **kwargs."""

from choreo import Role, choreography


@choreography
def star_args(alice: Role, *rest: Role) -> None:  # error: a choreography cannot take *args or **kwargs
    with alice:
        print("hi")


@choreography
def star_kwargs(alice: Role, **rest: Role) -> None:  # error: a choreography cannot take *args or **kwargs
    with alice:
        print("hi")
