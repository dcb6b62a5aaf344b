"""A log file that rotates and forgets: ``twistd --logger imaged.logfiles.rotating``."""

from __future__ import annotations

import os

from twisted.logger import ILogObserver, textFileLogObserver
from twisted.python.logfile import LogFile

#: Defaults: rotate at 100 MB, keep 10 old files (twistd's ``--logfile`` rotates at 1 MB and
#: keeps every file it ever rotated, which fills a disk under a flood of refused requests).
ROTATE_BYTES = 100 * 1000 * 1000
KEEP = 10


def rotating() -> ILogObserver:
    """
    twistd's ``--logger`` takes a factory without arguments, so the file and its bounds come
    from the environment: ``IMAGED_LOG_FILE`` (default ``imaged.log`` in twistd's working
    directory), ``IMAGED_LOG_ROTATE_BYTES`` and ``IMAGED_LOG_KEEP``.  ``SIGUSR1`` still
    rotates it at once, as twistd's own file does.
    """
    path = os.environ.get("IMAGED_LOG_FILE", "imaged.log")
    size = int(os.environ.get("IMAGED_LOG_ROTATE_BYTES", ROTATE_BYTES))
    keep = int(os.environ.get("IMAGED_LOG_KEEP", KEEP))
    if size <= 0 or keep < 0:
        raise ValueError("IMAGED_LOG_ROTATE_BYTES must be > 0 and IMAGED_LOG_KEEP >= 0")
    log_file = LogFile.fromFullPath(path, rotateLength=size, maxRotatedFiles=keep)
    return textFileLogObserver(log_file)


__all__ = ["KEEP", "ROTATE_BYTES", "rotating"]
