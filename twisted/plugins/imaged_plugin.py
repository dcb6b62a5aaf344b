"""Makes ``twistd imaged`` work; everything else lives in ``imaged.tap``."""

from twisted.application.service import ServiceMaker

imaged = ServiceMaker(
    "imaged",
    "imaged.tap",
    "OpenStack Image service (Glance Image API v2)",
    "imaged",
)
