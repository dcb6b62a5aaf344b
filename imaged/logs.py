"""
Log observers for twistd's ``--logger``: ``twistd --logger imaged.logs.json_observer imaged``
writes one JSON object per line (every event's fields as keys) to standard output, for
journald or a log shipper; without it twistd writes its usual text lines.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    """
    JSON lines on standard output (no record separator: one event, one line), written
    through at each line: twistd ends by re-raising SIGTERM, which would lose whatever a
    buffer still held (the shutdown's own events).
    """
    out = open(sys.stdout.fileno(), "w", buffering=1, encoding="utf-8", closefd=False)
    return jsonFileLogObserver(out, recordSeparator="")
