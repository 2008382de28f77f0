"""The Redis backend: the store of a breaker's state or a limiter's budget, for every host.

- ``connection``: one connection to Redis per limiter or breaker, and its outages.
- ``breaker_store``: a breaker's state machine as ``breaker.lua``.
- ``bucket_store``: a limiter's buckets as ``bucket.lua`` (GCRA of one or more windows).

The native breaker and bucket call a store for every step and apply ``on_backend_error``
themselves when it answers None (Redis unreachable): see ``rust/python/store.rs``.
"""
