"""Ping-pong: Alice says "hello", Bob answers "hi".

Guarantee: both roles finish, and Alice's result is Bob's reply ("hi").
Failure model: none tolerated; a crashed peer makes the other fail within its
receive deadline.
"""

from choreo import At, Role, choreography


@choreography
def ping_pong(alice: Role, bob: Role) -> At[str, "alice"]:
    with alice:
        greeting = "hello"
    heard = alice.send(greeting, to=bob)
    with bob:
        print(f"bob heard {heard!r}")
        reply = "hi"
    answer = bob.send(reply, to=alice)
    with alice:
        print(f"alice heard {answer!r}")
    return answer


@choreography
def ping_pong_n(alice: Role, bob: Role, rounds: At[int, "alice"]) -> At[int, "alice"]:
    """Ping-pong ``rounds`` times; Alice counts the replies (Alice decides when to stop)."""
    with alice:
        left = rounds
        replies = 0
    while left > 0:
        ping = alice.send(left, to=bob)
        with bob:
            pong = ping - 1
        back = bob.send(pong, to=alice)
        with alice:
            left = back
            replies = replies + 1
    return replies
