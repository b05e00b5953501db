"""The ``irctl`` executable's entry point: a cached no-op build is answered before typer, the
frontends or the solver are even imported (``irctl/fastpath.py``); everything else goes to the
typer app.

When the command is done the process exits without Python's interpreter teardown, which frees
every module and object one by one: ~0.1 s of CPU after a build (measured with strace between
the last write and ``exit_group``).  What a normal exit does before that teardown still happens:
non-daemon threads are joined, ``atexit`` handlers run, stdout and stderr are flushed."""

import sys


def main() -> None:
    try:
        if sys.argv[1:2] == ["build"]:
            from irctl.fastpath import try_build  # lazy: only `build` has a fast path

            status = try_build(sys.argv[2:])
            if status is not None:
                sys.exit(status)
        from irctl.app import main as app_main  # lazy: a fast-path hit never loads typer (~100 ms)

        app_main()
    except SystemExit as e:
        _exit(e.code)
    _exit(0)


def _exit(code: object) -> None:
    import atexit
    import os
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        sys.stderr.write(f"{code}\n")
        status = 1
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon and t.is_alive():
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what a normal exit would also fail to write
            pass
    os._exit(status & 0xFF)
