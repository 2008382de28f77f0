"""Glue for the frameworks and tools services run with; each module needs its own
optional dependency (``pip install peak-resilience[starlette]``, ``[flask]``,
``[opentelemetry]``) and is imported only by the application that uses it.

- ``starlette``: ``install(app)`` for FastAPI and Starlette.
- ``flask``: ``install(app)`` for Flask.
- ``otel``: ``install(meter_provider=None)``, the metric families for OpenTelemetry.
"""
