"""imaged: an OpenStack Image service (Glance Image API v2) on Twisted."""

__version__ = "0.1.0"
