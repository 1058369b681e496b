"""The six slice classes of §2.6.1 and the order the decision uses.

The class index of a probability column is its position in REGIONS. The first five are in
anatomical order from inferior to superior (legs < pelvis < abdomen < chest < head); spine
lies outside that order (dedicated spine examinations, decided separately).
"""

from __future__ import annotations

REGIONS: tuple[str, ...] = ("legs", "pelvis", "abdomen", "chest", "head", "spine")
ORDERED_REGIONS: tuple[str, ...] = REGIONS[:5]
SPINE = "spine"
REGION_INDEX: dict[str, int] = {name: index for index, name in enumerate(REGIONS)}

# RGB in [0, 1], one per region (segment colours, plot curves).
REGION_COLORS: dict[str, tuple[float, float, float]] = {
    "legs": (0.30, 0.69, 0.29),
    "pelvis": (0.60, 0.31, 0.64),
    "abdomen": (1.00, 0.50, 0.00),
    "chest": (0.22, 0.49, 0.72),
    "head": (0.89, 0.10, 0.11),
    "spine": (0.65, 0.34, 0.16),
}


def region_index(name: str) -> int:
    """Index of a region name; ValueError naming the valid names otherwise."""
    try:
        return REGION_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown region {name!r}; expected one of {', '.join(REGIONS)}") from None
