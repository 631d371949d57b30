"""``python -m triodist``: the command line, as the ``triodist`` command runs it.

The top layer: imports the command line (``triodist.cli``) and nothing else.
"""

from triodist.cli import console_main

console_main()
