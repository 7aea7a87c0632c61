"""Incident tests replay runs of the example agent: import it from the checkout.

``examples/`` is not part of the installed package; `load_example` puts the project root on
sys.path when it is not there yet (``python -m pytest`` does that, the ``pytest`` script does not).
"""

from replay.demo import load_example

load_example()
