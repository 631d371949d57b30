"""Asynchronous processing: the registry of held objects (``registry.py``), network
endpoints (``endpoint.py``) and listeners (``listener.py``).

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
``unixpaths.py``.

Imports nothing above triodist.asyncproc: system, wire and util below it.
"""
