"""
The metadata definitions catalog (Glance's "metadefs"): which properties exist, for whom.

``model`` holds its values, ``service`` its rules (visibility, policy, prefixes), ``schemas``
the documents Glance serves and validates against, ``files`` Glance's JSON definition files,
and ``definitions/`` the ones Glance ships.  The SQL store is ``imaged.store.metadefs``, the
routes ``imaged.web.metadefs``.
"""
