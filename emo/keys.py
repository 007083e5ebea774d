"""Comparing state-dict keys and shapes, for error messages that say exactly what differs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SHOW = 8  # how many offending keys a message lists


def listing(items: Iterable[str], show: int = SHOW) -> str:
    """'a, b, c, ... (N in all)' for error messages."""
    items = sorted(items)
    shown = ", ".join(items[:show])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > show else shown


def mismatch(expected: Mapping[str, tuple], found: Mapping[str, tuple], *,
             may_be_missing=lambda key: False, also_unexpected: Iterable[str] = ()) -> str:
    """'' when `found` (key -> shape) fills `expected` exactly, else a summary such as
    '2 missing keys: a, b; 1 unexpected keys: c; 1 shape mismatches: d file [4] != model [3]'."""
    missing = [k for k in expected if k not in found and not may_be_missing(k)]
    unexpected = {k for k in found if k not in expected} | set(also_unexpected)
    wrong = [f"{k} file {list(found[k])} != model {list(expected[k])}" for k in expected
             if k in found and tuple(found[k]) != tuple(expected[k])]
    parts = [f"{len(items)} {label}: {listing(items, 4 if label == 'shape mismatches' else SHOW)}"
             for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                  ("shape mismatches", wrong)) if items]
    return "; ".join(parts)
