"""The ``peak-resilience`` command.

- ``main``: the parser and the exit codes.
- ``health``: ``serve`` (the endpoints) and ``check`` (the checks, once).
- ``config``: ``config validate`` and ``config show``.
- ``bench``: the quick ratio table.
- ``demo``: an order loop against a simulated exchange.
"""
