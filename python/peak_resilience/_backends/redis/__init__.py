"""The Redis backend: one budget and one breaker state for every host.

- ``connection``: one connection to Redis per limiter or breaker, and its outages.
- ``breaker``: the circuit breaker whose state lives in Redis.
- ``limiter``: the rate limiter whose budget lives in Redis.
- ``guard``: guarding a call when either of them lives in Redis.
"""
