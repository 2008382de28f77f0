"""The ``peak-resilience`` command.

- ``main``: the parser and the exit codes.
- ``commands``: every command's arguments; a command's module is imported when it runs.
- ``health``: ``serve`` (the endpoints) and ``check`` (the checks, once).
- ``config``: ``config validate`` and ``config show``.
- ``bench``: the quick ratio table.
- ``demo``: an order loop against a simulated exchange.
"""
