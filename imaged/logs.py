"""
Log observers for twistd's ``--logger``: ``twistd --logger imaged.logs.json_observer imaged``
writes one JSON object per line (every event's fields as keys) to standard output, for
journald or a log shipper; without it twistd writes its usual text lines.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    """JSON lines on standard output (no record separator: one event, one line)."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
