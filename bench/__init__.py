"""triodist's benchmark: triodist and dnsdist measured side by side.

``python -m bench`` (from the project root) starts an authoritative backend (knotd) on
loopback, then, for every scenario, each proxy in turn on its own loopback port, loads it with
dnsperf and reports queries per second, lost queries, latency and the proxy's CPU time per
query, with the ratio triodist/dnsdist.  Everything it starts is stopped before it returns.

A scenario is a name, a dnsdist configuration, a triodist configuration and a query file (see
:mod:`bench.scenarios`); adding one is adding an entry there and two files in
``bench/configs/``.

Modules, each depending only on those listed before it:

* :mod:`bench.tools`: the external programs needed and how to install them, versions, machine.
* :mod:`bench.procs`: starting, pinning, probing and stopping processes; CPU time from /proc.
* :mod:`bench.dnsperf`: running dnsperf and reading its statistics.
* :mod:`bench.backend`: the knotd backend in a temporary directory.
* :mod:`bench.proxies`: how dnsdist and triodist are started on a scenario's configuration.
* :mod:`bench.scenarios`: the scenarios and their query files.
* :mod:`bench.async_responder`: the ``async`` scenario's external component (a program).
* :mod:`bench.component`: that component, started and read by the harness.
* :mod:`bench.measure`: one measured run and the checks on what it measured.
* :mod:`bench.report`: medians, the table, the Markdown and JSON results.
* :mod:`bench.cli`: the command line and the order of the runs.
"""
