"""A plain statement inside a branch decided at one role: the other roles cannot know it ran."""

from choreo import At, Role, choreography


@choreography
def plain_in_branch(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    if x > 0:
        n = 1  # error: a plain statement inside a branch or loop decided at one role
        y = alice.send(x, to=bob)
        with bob:
            print(y)
