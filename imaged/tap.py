"""
The twistd plugin's module: ``Options`` and ``makeService``, as ``twistd imaged`` expects them.

``twistd imaged`` (the plugin), ``twistd -y imaged.tac`` and programs that embed imaged all go
through ``makeService``, so they run the same thing.  The options are ``imaged.config``; what
they become is ``imaged.daemon.service_tree``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from .config import DEFAULT_CONFIG, Options, options_from_environment
from .daemon import service_tree
from .settings import Settings


def makeService(options: usage.Options, reactor: Any = None) -> IService:
    """imaged's service tree for parsed ``options`` (an ``imaged.config.Options``)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    settings: Settings = getattr(options, "settings", None) or Settings.from_options(options)
    return service_tree(settings, reactor)


__all__ = ["DEFAULT_CONFIG", "Options", "makeService", "options_from_environment"]
