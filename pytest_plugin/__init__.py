"""The agent-replay pytest plugin (registered by the ``pytest11`` entry point ``replay``).

Nothing is imported here: pytest loads :mod:`pytest_plugin.plugin` for every test run of every
project that has agent-replay installed, so the package must stay free to import.
"""

__all__: list[str] = []
