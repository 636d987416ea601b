"""Redis transport of the online loop, behind small interfaces with in-memory twins.

* :mod:`.bus` — the feedback stream (API → trainer): publish once, read, commit, trim.
* :mod:`.keys` — every Redis key name of one deployment.
* :mod:`.publication` — versioned policy blobs, the ``current`` pointer, hot-swap notices.
* :mod:`.redis_server` — an embedded ``redis-server`` for machines without one.
"""
