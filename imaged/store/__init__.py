"""Stores behind imaged's interfaces: image records (``sql``) and image bytes (``files``)."""
