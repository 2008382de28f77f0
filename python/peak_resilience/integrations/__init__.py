"""Glue for the frameworks and tools services run with; each module needs its own
optional dependency (``pip install peak-resilience[starlette]``, ``[flask]``,
``[opentelemetry]``) and is imported only by the application that uses it.

- ``starlette``: ``install(app)`` for FastAPI and Starlette.
- ``flask``: ``install(app)`` for Flask.
- ``otel``: ``install(meter_provider=None)``, the metric families for OpenTelemetry.
- ``ccxt``: ``install(exchange, limiter, breaker=None)``, a limiter fed by the exchange's
  replies in front of a ccxt exchange (sync or async).
"""
