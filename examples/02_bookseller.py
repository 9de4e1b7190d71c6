"""Example 2: the same bookseller as one choreography.

One global program says who sends what to whom. choreo checks it (every value
is used only where it is located), projects one program per role (print them
with ``choreo project examples/02_bookseller.py``), and inserts the message
that tells the seller which branch the buyer took: compare with the hand-
written step 3 of ``01_bookseller_by_hand.py``.

Run every role in this process:  ``python examples/02_bookseller.py TAPL 100``
Run every role as its own process over gRPC:
    ``choreo up examples/02_bookseller.py:bookseller --input title=TAPL --input budget=100``
"""

from __future__ import annotations

import datetime
import sys

import choreo
from choreo import At, Role, choreography

CATALOGUE = {"TAPL": 80, "PFPL": 60, "SICP": 45}


def ship_date(title: str) -> str:
    return (datetime.date(2023, 8, 1) + datetime.timedelta(days=len(title) // 2)).isoformat()


@choreography
def bookseller(
    buyer: Role, seller: Role, title: At[str, "buyer"], budget: At[int, "buyer"]
) -> At[str | None, "buyer"]:
    t = buyer.send(title, to=seller)  # buyer -> seller
    with seller:
        price = CATALOGUE.get(t)
    p = seller.send(price, to=buyer)  # seller -> buyer
    with buyer:
        ok = p is not None and p <= budget
    if ok:  # decided at buyer; choreo tells the seller
        d = seller.send(ship_date(t), to=buyer)
        return d
    return None


if __name__ == "__main__":
    title, budget = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) == 3 else ("TAPL", 100)
    print("central: ", bookseller(title=title, budget=budget))
    print("projected:", choreo.run(bookseller, title=title, budget=budget))
