"""triodist: a DNS load balancer and filtering proxy in the mould of dnsdist, on Trio.

Holds the version only. Imports nothing, so that any layer may read it.
"""

from __future__ import annotations

__version__ = "0.1.0"
