"""What the ``pytest11`` entry point ``triodist`` loads: the plugin, by its module name.

pytest registers an entry point's module under the entry point's name. Were that module
the plugin itself, a project that also writes ``pytest_plugins =
["triodist.testing.plugin"]`` (needed where plugins are not loaded by themselves,
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) would make pytest register it a second time, under
its module name, and stop: "Plugin already registered under a different name". Loading
it from here registers it under its module name in both cases, and pytest then sees it
is already there.
"""

from __future__ import annotations

pytest_plugins = ["triodist.testing.plugin"]
