from choreo import At, Role, choreography


@choreography
def early(alice: Role, bob: Role, x: At[int, "alice"]) -> At[int, "bob"]:
    with alice:
        if x < 0:
            return 0  # error: `return` inside a `with` block would end only that role's part
    y = alice.send(x, to=bob)
    return y


@choreography
def escape(alice: Role, bob: Role, n: At[int, "alice"]) -> None:
    with alice:
        k = n
    while k > 0:
        with alice:
            k = k - 1
            if k == 3:
                break  # error: `break` inside a `with` block would leave a loop at that role only
        m = alice.send(k, to=bob)


@choreography
def fine(alice: Role, x: At[list, "alice"]) -> At[int, "alice"]:
    with alice:
        total = 0
        for v in x:
            if v < 0:
                continue  # a loop inside the block: fine
            total += v

        def helper(y: int) -> int:
            return y + 1  # a function inside the block: fine

        total = helper(total)
    return total
