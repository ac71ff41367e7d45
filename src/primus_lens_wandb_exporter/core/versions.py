"""Version gates shared by every integration: an adapter enables itself only inside
the range of framework versions it was tested on."""

from typing import Optional, Tuple


def version_tuple(text, width: int = 3) -> Tuple[int, ...]:
    """``"2.6.6+cu121"`` -> ``(2, 6, 6)``: the leading digits of each dotted part."""
    out = []
    for part in str(text).split("+")[0].split(".")[:width]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        out.append(int(digits) if digits else 0)
    while len(out) < width:
        out.append(0)
    return tuple(out)


def in_range(version: Optional[str], low: Tuple[int, ...], high: Tuple[int, ...]) -> bool:
    """``low <= version < high`` (``None`` is outside every range)."""
    if version is None:
        return False
    return low <= version_tuple(version, max(len(low), len(high))) < high
