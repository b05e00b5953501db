"""The ``irctl`` executable's entry point: a cached no-op build is answered before typer, the
frontends or the solver are even imported (``irctl/fastpath.py``); everything else goes to the
typer app."""

import sys


def main() -> None:
    if sys.argv[1:2] == ["build"]:
        from irctl.fastpath import try_build

        status = try_build(sys.argv[2:])
        if status is not None:
            sys.exit(status)
    from irctl.app import main as app_main

    app_main()
