"""
JSON text as imaged reads it: standard JSON only, so every number it keeps is finite.

Python's ``json`` takes ``NaN``, ``Infinity`` and numbers too large for a float (``1e400``
becomes ``inf``) and writes them back as ``NaN``/``Infinity``, which no strict JSON parser
(a browser's, Go's) accepts: a value stored from such a request would make every later answer
that shows it unreadable.  Request bodies and definition files are read here instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotFinite(ValueError):
    """The text holds ``NaN``, ``Infinity`` or a number beyond a float's range."""


def _constant(name: str) -> Any:
    raise NotFinite(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"the number {text[:32]} is out of range")
    return value


def loads(text: str) -> Any:
    """``json.loads`` refusing what is not standard JSON (``NotFinite``, a ``ValueError``)."""
    return json.loads(text, parse_constant=_constant, parse_float=_float)


__all__ = ["NotFinite", "loads"]
