"""``irctl worker``: serve a build farm — run the exec steps a BuildGrid server leases to this machine.

The bot itself is ``backend.farm.worker``; this module parses the flags, enters the rootless user
namespace as ``irctl build`` does (a worker runs steps exactly as a local build runs them), and
turns SIGTERM/SIGINT into the bot's stop (first: finish the running steps; second: give them back).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from irctl.errors import UserError, user_errors
from irctl.rootless import enter_if_unprivileged
from irctl.terminal import printable


def worker(
    server: str = typer.Option(..., "--server", help="The BuildGrid server: grpc://HOST:PORT[,instance=NAME] "
                                                     "(grpcs:// for TLS)."),
    name: str = typer.Option("", "--name", help="This worker's name, unique in the farm (the server "
                                                "knows a bot by it), shown on the steps it runs (default: "
                                                "HOSTNAME-PID)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="The worker's store: its layer cache and its "
                                                                       "cache mounts (default as for irctl build)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Run at most N steps at once."),
) -> None:
    """Run steps for a build farm: a Remote Workers API bot for BuildGrid (see README "Build farms")."""
    with user_errors():
        if jobs < 1:
            raise UserError(f"--jobs {jobs}: a worker runs at least one step at a time")
        # lazy: --help imports every command module; the farm's code only for the command that runs it
        from backend.reapi.address import parse_endpoint

        try:
            endpoint, _ = parse_endpoint(server, "--server")
        except ValueError as e:
            raise UserError(str(e)) from None
        name = name or f"{socket.gethostname()}-{os.getpid()}"
        enter_if_unprivileged()
        _serve(endpoint, name, cache_dir, jobs)


def _serve(endpoint, name: str, cache_dir: Optional[Path], jobs: int) -> None:
    from backend.farm.worker import Worker, open_host  # lazy: the backend only inside the user namespace
    from backend.reapi.client import Remote  # lazy: as above (irctl.rootless)

    remote = Remote(endpoint)
    try:
        with open_host(cache_dir, jobs) as host:
            bot = Worker(remote, host, name=name, jobs=jobs, say=_say)
            _on_signals(bot.request_stop)
            failed: list[BaseException] = []
            thread = threading.Thread(target=_run, args=(bot, failed), name="bot", daemon=True)
            thread.start()
            while thread.is_alive():  # the main thread stays free for the signal handlers
                thread.join(0.2)
            if failed:
                raise failed[0]
    finally:
        remote.close()
    _say(f"irctl worker: {name} stopped")


def _run(bot, failed: list[BaseException]) -> None:
    try:
        bot.serve(ready=lambda: _say(f"irctl worker: {bot.name} ready"))
    except BaseException as e:  # noqa: BLE001 - handed to the main thread, which reports it
        failed.append(e)


def _on_signals(stop) -> None:
    def handler(signum, frame) -> None:
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _say(line: str) -> None:
    sys.stderr.write(printable(line) + "\n")  # a step's description is the client's text
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
