"""Where the state of a limiter or a breaker lives.

- ``choice``: the backends (``"memory"``, ``"shared"``, ``"redis"``), what to do when one
  cannot be reached (``on_backend_error``), their checks, and the count of failed calls.
- ``shared``: the directory and the files of the shared-memory backend.
- ``redis``: the Redis backend (connection, breaker, limiter, guard).
"""
