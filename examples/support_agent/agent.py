"""`replay.demo_agent.agent` under its old name (the agent ships in the package; see
`replay.demo_agent`).

This module *is* the packaged one (the same module object), so patching or reading it here is
patching or reading the agent `replay demo` runs, and runs recorded under this name replay.
"""

import sys

from replay.demo_agent import agent as _module

sys.modules[__name__] = _module
