"""``python -m irctl``: the same as the ``irctl`` script."""

from irctl.app import main

main()
