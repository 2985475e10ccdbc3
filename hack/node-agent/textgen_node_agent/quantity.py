"""Kubernetes resource quantities ("1Gi", "500M", "2") as numbers."""
from __future__ import annotations

SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3}


def parse_quantity(value: str | int | float) -> int:
    """Bytes (or units) of a quantity, rounded up; ValueError with the value when it is not one."""
    text = str(value).strip()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], SUFFIXES[suffix]
            break
    else:
        number, scale = text, 1
    try:
        amount = float(number) * scale
    except ValueError:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 64Mi, 1Gi, 500M)") from None
    return int(-(-amount // 1))
