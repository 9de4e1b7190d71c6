"""The expression of a send is evaluated at the sender, so it may only read the sender's values."""

from choreo import At, Role, choreography


@choreography
def send_reads_other(alice: Role, bob: Role, x: At[int, "alice"], y: At[int, "bob"]) -> None:
    z = alice.send(x + y, to=bob)  # error: `y` is located at bob, but the value sent by alice runs at alice
    with bob:
        print(z)
