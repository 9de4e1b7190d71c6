"""Several independent errors in one file (two choreographies): all are reported at once."""

from choreo import At, Role, choreography


@choreography
def first(alice: Role, bob: Role, x: At[int, "alice"], y: At[int, "bob"]) -> None:
    with bob:
        z = x + y  # error: `x` is located at alice, but this `with bob:` block runs at bob
    if x > y:  # error: this condition mixes values located at different roles
        with alice:
            print(z)  # error: `z` is located at bob, but this `with alice:` block runs at alice
    global SEEN  # error: `global` is not allowed in a choreography


@choreography
def second(alice: Role, n) -> None:  # error: parameter `n` needs an annotation
    print("start")  # error: a plain statement outside `with` that binds nothing would run at every role
    w = alice.send(1)  # error: `send` needs its receiver as `to=`
    with alice:
        print(missing_name)# error: name `missing_name` is not defined
