"""``python -m irctl``: the same as the ``irctl`` script."""

from irctl.entry import main

main()
