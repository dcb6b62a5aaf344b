"""
Telling systemd how imaged is doing (``Type=notify``), without a dependency.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); a datagram
``READY=1`` there says imaged is listening, ``STOPPING=1`` that it is shutting down.  Outside
systemd the variable is absent and nothing is sent.
"""

from __future__ import annotations

import os
import socket

from twisted.logger import Logger

log = Logger()


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; ``False`` if not run by systemd."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode())
    except OSError as e:
        log.warn("could not notify systemd ({state}): {error}", state=state, error=e)
        return False
    return True
