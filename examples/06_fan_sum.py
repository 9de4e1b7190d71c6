"""Example 6: fan-out / fan-in: a coordinator splits a list among N workers and sums.

``client.scatter(parts, to=workers)`` gives each worker its own part (``parts``
is a dict member -> value); ``workers.send(partial, to=client)`` gathers one
value per worker (a dict member -> value).

Run it:

    python examples/06_fan_sum.py 4 1 2 3 4 5 6 7 8 9 10

(the first number is the number of workers, the rest is the list to sum).
"""

from __future__ import annotations

import sys

import choreo
from choreo import At, Role, Roles, choreography


@choreography
def fan_sum(client: Role, workers: Roles, numbers: At[list, "client"]) -> At[int, "client"]:
    with client:
        parts = {w: numbers[i :: len(workers)] for i, w in enumerate(workers)}
    mine = client.scatter(parts, to=workers)
    with workers:
        partial = sum(mine)
    partials = workers.send(partial, to=client)
    with client:
        total = sum(partials.values())
    return total


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    numbers = [int(x) for x in sys.argv[2:]] or list(range(1, 101))
    print("central:", fan_sum(numbers=numbers, workers=n))
    print("projected:", choreo.run(fan_sum, numbers=numbers, workers=n)["client"])
