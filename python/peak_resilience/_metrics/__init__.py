"""Metrics: what is counted, how it is read, and how it is exported.

- ``families``: the exported families' names, types and help, and the name prefix rule.
- ``readings``: every exported value read at one instant from the live objects.
- ``bound``: the cardinality bound over the names of those objects ("other" past it).
- ``recorder``: the guide's ``metrics`` object (switches, explicit ``record_*`` calls,
  the event ring), registered into prometheus-client's default registry on import.
- ``prometheus``: the prometheus-client collector.
- ``exposition``: the text exposition written straight from the readings.
"""
