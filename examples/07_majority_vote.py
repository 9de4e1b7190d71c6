"""Example 7: a majority vote, and a decision every voter then acts on.

The coordinator multicasts a proposal; each voter votes from its own opinion
(an input located at the group: one value per member); the coordinator
gathers every vote and decides by majority, then multicasts the decision.
The decision is then *the same value at every voter*, so the voters may
branch on it together (``if accepted:``): no selection message is needed
among them, only the coordinator's choice matters. Branching on a vote
itself (one value per voter) would be rejected by the checker.

``quorum=majority`` on the gather would return as soon as more than half of
the voters answered (see the tests for a voter that never answers).

Run it:

    python examples/07_majority_vote.py yes no yes
"""

from __future__ import annotations

import sys

import choreo
from choreo import At, Role, Roles, choreography


@choreography
def vote(
    coordinator: Role,
    voters: Roles,
    proposal: At[str, "coordinator"],
    opinion: At[bool, "voters"],
) -> At[bool, "voters"]:
    p = coordinator.send(proposal, to=voters)
    with voters:
        ballot = bool(opinion) and len(p) > 0
    ballots = voters.send(ballot, to=coordinator)
    with coordinator:
        yes = sum(1 for b in ballots.values() if b)
        accepted = 2 * yes > len(ballots)
    decision = coordinator.send(accepted, to=voters)
    if decision:  # the same value at every voter: decided by the group, no selection
        with voters:
            applied = True
    else:
        with voters:
            applied = False
    return applied


if __name__ == "__main__":
    opinions = [a.lower() in ("yes", "y", "1", "true") for a in sys.argv[1:]] or [True, False, True]
    members = [f"voters.{i}" for i in range(len(opinions))]
    out = choreo.run(
        vote,
        proposal="lunch at noon",
        opinion=dict(zip(members, opinions, strict=True)),
        voters=members,
    )
    for m in members:
        print(f"{m}: {'accepted' if out[m] else 'rejected'}")
