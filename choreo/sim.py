"""Deterministic simulation of choreographies: virtual time, seeded schedules, faults.

See ``docs/simulation.md``. Everything here is ``choreo._sim``'s public surface.
"""

from choreo._sim import *  # noqa: F403 - the public names are exactly _sim.__all__
from choreo._sim import __all__ as __all__
