"""Starting imaged the way users do, for real-socket tests."""

from imaged.testing import TWISTD
from imaged.testing import TwistdDaemon as Daemon

__all__ = ["TWISTD", "Daemon"]
