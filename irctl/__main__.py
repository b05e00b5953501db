"""``python -m irctl``: the same as the ``irctl`` script.

``python -m`` puts the current directory first on ``sys.path``, and irctl is run inside the
repositories it builds: a context holding ``ir.py``, ``typer.py`` or ``httpx.py`` would be imported
as that module, on the host.  So the directory is dropped before anything else is imported, unless
irctl itself was found there (running from a checkout of irctl).  (A file named ``irctl.py`` in
the current directory is run by Python before this module: use the ``irctl`` script, or
``python3 -P -m irctl``, inside untrusted directories.)
"""

import os
import sys

if sys.path and os.path.realpath(sys.path[0] or ".") != os.path.dirname(os.path.dirname(os.path.realpath(__file__))):
    del sys.path[0]

from irctl.entry import main  # noqa: E402

main()
