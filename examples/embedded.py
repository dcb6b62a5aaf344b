"""
imaged inside another Twisted application: run it with ``twistd -ny examples/embedded.py``.

The host application has services of its own (here, a heartbeat); imaged's whole service tree
(stores, API listener, metrics, graceful shutdown) joins it as one child, configured from a
mapping with the configuration file's keys.
"""

from twisted.application.internet import TimerService
from twisted.application.service import Application, MultiService
from twisted.logger import Logger

from imaged.tap import Options, makeService

log = Logger(namespace="host")

application = Application("host-with-imaged")
host = MultiService()
host.setServiceParent(application)

TimerService(60, lambda: log.info("host heartbeat")).setServiceParent(host)

imaged = makeService(
    Options.from_mapping(
        {
            "listen": "tcp:9292:interface=127.0.0.1",
            "data-dir": "/tmp/imaged-embedded",
            "image-size-cap": 10 * 1024**3,
        }
    )
)
imaged.setServiceParent(host)
