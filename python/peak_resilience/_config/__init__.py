"""Resilience settings from ``config.toml`` and the environment (see the ``config`` guide
module for the rules).

- ``schema``: the keys, their types, defaults and checks (``Settings``).
- ``values``: a key's value from TOML or from an environment variable's text, checked.
- ``environment``: the ``PEAK_TRADE_*`` overrides.
- ``load``: reading a file and the environment into validated settings (``Config``).
- ``active``: the configuration in force, and who is told when it changes.
- ``secrets``: which keys hold secrets, and how they are shown.
- ``errors``: ``ConfigError``.
"""
