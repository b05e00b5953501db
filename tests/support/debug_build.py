"""The failing build the debug-shell tests share (tests/cli/test_debug_shell.py as root,
tests/rootless/test_debug_shell_rootless.py as a user): a RUN step that writes a file and a cache
entry, then exits 3; and the line typed in its shell that reports what the shell sees."""

from __future__ import annotations

from tests.support.terminal import TerminalSession

TOKEN = "debug-shell-token-5c1e"

DOCKERFILE = """\
FROM base
ENV HELLO=from-env
WORKDIR /work
RUN chown 1000:1000 /work
USER 1000:1000
RUN --network=none --mount=type=cache,target=/cache,uid=1000 \\
    --mount=type=secret,id=tok,target=/run/secrets/tok-file,uid=1000 \\
    --mount=type=secret,id=tok,env=TOKEN_ENV --mount=type=ssh,target=/run/agent.sock \\
    --mount=type=bind,target=/ctx --mount=type=tmpfs,target=/scratch \\
    echo written-by-step > left.txt && echo cached-by-step > /cache/entry && exit 3
"""

# Each answer is computed by the shell ($((…))), so the terminal's echo of the typed line never matches it.
PROBE = ('echo "FILE=$(cat /work/left.txt) PWD=$(pwd) HELLO=$HELLO UID=$(id -u):$(id -g) '
         'CACHE=$(cat /cache/entry) SECRET=$(cat /run/secrets/tok-file 2>/dev/null) SECRET_ENV=$TOKEN_ENV '
         'AGENT=$(test -S /run/agent.sock && echo bound || echo none) '
         'NETS=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d \' \\n\') BIND=$(head -c4 /ctx/Dockerfile) '
         'TMPFS=$(grep -c " /scratch tmpfs " /proc/mounts) END$((40+2))"')

# What the probe answers in that step's shell without --debug-secrets: the step's file, working dir,
# environment, user, cache, network (none: loopback only), context bind and tmpfs; no secret, no agent.
SEEN = {"FILE": "written-by-step", "PWD": "/work", "HELLO": "from-env", "UID": "1000:1000", "CACHE": "cached-by-step",
        "SECRET": "", "SECRET_ENV": "", "AGENT": "none", "NETS": "lo", "BIND": "FROM", "TMPFS": "1"}


def probe(term: TerminalSession) -> dict[str, str]:
    """Type the probe in the shell and return its answers, KEY -> value."""
    term.expect("exit it to end the build")
    term.send(PROBE)
    line = term.expect("END42").rsplit("\n", 1)[-1]
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def probe_and_exit(argv: list[str], exit_line: str, env: dict | None = None,
                   cwd: str | None = None) -> tuple[dict[str, str], int, str]:
    """Run ``argv`` on a terminal, probe its debug shell, type ``exit_line``: (the probe's answers,
    the exit status, everything the terminal showed)."""
    term = TerminalSession(argv, env=env, cwd=cwd)
    try:
        seen = probe(term)
        term.send(exit_line)
        return seen, term.wait(), term.text
    finally:
        term.close()


def step_error(stderr: str) -> str:
    """The build's error report: from the failed step's ERROR marker to the end."""
    return stderr[stderr.index("did not complete successfully"):].strip()
