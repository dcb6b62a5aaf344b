"""The HTTP layer: routes (``app``), routing and negotiation (``routing``), bodies and downloads
(``data``), the wire format (``wire``, ``listing``), errors (``errors``), identity (``auth``).
"""
