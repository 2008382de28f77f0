"""The health and metrics endpoints over HTTP.

- ``endpoints``: what each endpoint answers (``HealthEndpoints``), and the token.
- ``server``: the threaded background server (``start_health_server``).
- ``asgi``, ``wsgi``: the same endpoints as ASGI and WSGI apps.
"""
