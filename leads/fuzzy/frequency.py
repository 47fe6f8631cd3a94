"""Value frequencies: agreeing on a rare name says more than on a common one."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable

# However rare or common a value, its agreement moves the score by at most
# this many bits from the comparison's own exact weight: the counts come from
# a sample, and a value seen once is rare there, not necessarily in the world.
MAX_ADJUSTMENT = 4.0


class Frequencies:
    """How often each prepared value of one field occurs among stored leads.

    Agreement on a value is worth the comparison's exact weight (tuned for a
    typical value) plus log2 of how much rarer than typical the value is:
    the typical chance that two records agree by accident is the sum of the
    squared shares of all values, the chance for this value is its share
    (term-frequency adjustment, as in Winkler's and Splink's matchers).
    """

    def __init__(self, values: Iterable[Hashable]) -> None:
        counts = Counter(value for value in values if value is not None)
        total = sum(counts.values())
        self._total = max(total, 1)
        self._counts = counts
        self._typical = (
            sum(count * count for count in counts.values()) / (total * total)
            if total
            else 0.0
        )

    def adjustment(self, value: Hashable) -> float:
        """Bits to add to an exact agreement on this value (negative when common)."""
        if value is None or not self._typical:
            return 0.0
        # A value never seen counts as seen once: it is rare, not impossible.
        share = max(self._counts.get(value, 0), 1) / self._total
        bits = math.log2(self._typical / share)
        return max(-MAX_ADJUSTMENT, min(MAX_ADJUSTMENT, bits))
