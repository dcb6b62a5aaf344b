"""Stores behind imaged's interfaces: image records (``sql`` on ``database``, ``queries``,
``rows``, ``tables``) and image bytes (``files``; ``swift`` and ``s3`` on ``objstore``)."""
