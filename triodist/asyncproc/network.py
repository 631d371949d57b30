"""Network endpoints and listeners: how a configuration talks to a component outside.

dnsdist's asynchronous processing hands a suspended query to an external component and
hears back from it over unix datagram sockets:

* :class:`~triodist.asyncproc.endpoint.NetworkEndpoint` (``newNetworkEndpoint(path)``,
  ``endpoint.py``) is a datagram socket connected to the component: sending, its bounded
  queue and the writer task that empties it as the component reads.
* :class:`~triodist.asyncproc.listener.NetworkListener` (``newNetworkListener()``,
  ``listener.py``) owns listening sockets (their files: ``socketfiles.py``); each datagram
  received is handed to a callback, ``callback(endpointID, message, from)``, which
  typically resumes the query (``getAsynchronousObject(a, q):resume()``).

What both take from the configuration (paths, the worker index, where they count) is in
``unixpaths.py``. This module holds nothing of its own any more.

Imports nothing above triodist.asyncproc.
"""

from __future__ import annotations

# Re-exported for importers outside this package, until their imports move.
from triodist.asyncproc.listener import NetworkListener as NetworkListener
from triodist.asyncproc.unixpaths import set_worker_index as set_worker_index
from triodist.asyncproc.unixpaths import unix_path as unix_path
