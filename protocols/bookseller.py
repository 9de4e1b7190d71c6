"""The bookseller: a buyer asks a seller for a book's price and buys it if it fits the budget.

Two versions. ``bookseller``: one buyer decides alone. ``two_buyer_bookseller``:
two buyers split the price; the decision is a sub-choreography,
``split_decision``, to which the second buyer passes its contribution.

Guarantee: the buyer's result is the delivery date exactly when the book is in
the catalogue and (its share of) the price is within budget, ``None``
otherwise; the seller learns the decision (knowledge of choice) and ships only
then. Failure model: none tolerated; a crashed peer makes the others fail
within their receive deadline.
"""

import datetime

from choreo import At, Role, choreography

CATALOGUE = {"TAPL": 80, "PFPL": 60, "SICP": 45}


def ship_date(title: str) -> str:
    """The seller's (deterministic) delivery date for a title."""
    return (datetime.date(2023, 8, 1) + datetime.timedelta(days=len(title) // 2)).isoformat()


@choreography
def bookseller(
    buyer: Role,
    seller: Role,
    title: At[str, "buyer"],
    budget: At[int, "buyer"],
    catalogue: At[dict, "seller"],
) -> At[str | None, "buyer"]:
    t = buyer.send(title, to=seller)
    with seller:
        price = catalogue.get(t)
    p = seller.send(price, to=buyer)
    with buyer:
        ok = p is not None and p <= budget
    if ok:
        d = seller.send(ship_date(t), to=buyer)
        return d
    return None


@choreography
def split_decision(
    buyer1: Role,
    buyer2: Role,
    price: At[int | None, "buyer1"],
    budget: At[int, "buyer1"],
    contribution: At[int, "buyer2"],
) -> At[bool, "buyer1"]:
    """Buyer 2 tells buyer 1 how much it pays; buyer 1 decides whether the rest fits."""
    c = buyer2.send(contribution, to=buyer1)
    with buyer1:
        ok = price is not None and price - c <= budget
    return ok


@choreography
def two_buyer_bookseller(
    buyer1: Role,
    buyer2: Role,
    seller: Role,
    title: At[str, "buyer1"],
    budget: At[int, "buyer1"],
    limit: At[int, "buyer2"],
    catalogue: At[dict, "seller"],
) -> At[str | None, "buyer1"]:
    t = buyer1.send(title, to=seller)
    with seller:
        price = catalogue.get(t)
    p = seller.send(price, to=[buyer1, buyer2])
    with buyer2:
        share = 0 if p is None else min(limit, p // 2)
    ok = split_decision(buyer1, buyer2, p, budget, share)
    if ok:
        d = seller.send(ship_date(t), to=buyer1)
        return d
    return None
