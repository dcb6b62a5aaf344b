"""The HTTP layer: Klein routes (``app``), the wire format (``wire``), errors (``errors``)."""
