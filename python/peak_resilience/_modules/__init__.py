"""The per-module breakers and limiters of ``[resilience.<module>]``.

- ``build``: breakers and limiters built from a module's settings, and updated in place.
- ``registry``: the registry of every module's breakers, limiters and decorated
  functions, ``with_resilience`` and ``create_module_*``.
- ``host_state``: a health process attaching to the host's shared limiters and breakers.
"""
