"""Dockerfile parse speed: ours against the ``dockerfile-parse`` PyPI package on the same text.

    python benchmarks/bench_parse.py [--lines 5000] [--runs 5] [--seed 1] [--profile] [--no-install]

Generates a seeded, realistic multi-stage Dockerfile of about ``--lines`` lines (ARGs, FROM ... AS,
RUN with continuations and ``--mount``, COPY/ADD with flags, ENV/LABEL in both forms, JSON-form
CMD/ENTRYPOINT, HEALTHCHECK, comments; no heredocs, which ``dockerfile-parse`` does not support),
then reports the best of ``--runs`` wall-clock times for

* ``parse_syntax``      BuildKit's parser stage (what ``dockerfile-parse`` also does),
* ``parse_dockerfile``  the full parse: typed instructions, mounts, flag checks, build checks,
* ``dockerfile-parse``  ``DockerfileParser(...).structure`` (pip-installed if missing unless
  ``--no-install``; skipped if it still cannot be imported),

and the ratios (our time / theirs; the runs are interleaved).  The lark grammars are compiled before timing (they are compiled once per process).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from frontends.dockerfile.parse import parse_dockerfile  # noqa: E402
from frontends.dockerfile.syntax import parse_syntax  # noqa: E402


def make_dockerfile(lines: int, seed: int) -> str:
    rng = random.Random(seed)
    pkgs = ["curl", "git", "make", "gcc", "libssl-dev", "python3", "ca-certificates", "tzdata", "jq"]
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:bookworm-slim", "ARG VERSION=1.2.3"]
    stage = 0
    while len(out) < lines:
        out.append(f"FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}")
        for _ in range(rng.randint(8, 20)):
            kind = rng.random()
            if kind < 0.30:
                n = rng.randint(2, 6)
                out.append("RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\")
                out.append("    set -eux; \\")
                out.append("    # install build dependencies")
                for i in range(n):
                    out.append(f"    apt-get install -y --no-install-recommends {rng.choice(pkgs)} \\")
                out.append("    && rm -rf /var/lib/apt/lists/*")
            elif kind < 0.45:
                out.append(f"COPY --from=stage{max(stage - 1, 0)} --chown=1000:1000 --chmod=0755 "
                           f"/src/bin{rng.randint(0, 99)} /usr/local/bin/")
            elif kind < 0.55:
                out.append(f"ENV PATH=/opt/bin:$PATH LANG=C.UTF-8 V{rng.randint(0, 9)}=\"a b c\"")
            elif kind < 0.60:
                out.append(f"ENV LEGACY_{rng.randint(0, 99)} some value here")
            elif kind < 0.68:
                out.append(f'LABEL org.opencontainers.image.version="${{VERSION}}" stage="{stage}"')
            elif kind < 0.75:
                out.append(f"WORKDIR /app/{rng.randint(0, 9)}")
            elif kind < 0.82:
                out.append('CMD ["/usr/local/bin/app", "--port", "8080"]')
            elif kind < 0.86:
                out.append("ADD --checksum=sha256:" + "ab" * 32 + " https://example.invalid/x.tgz /tmp/")
            elif kind < 0.90:
                out.append("HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/ || exit 1")
            elif kind < 0.95:
                out.append(f"# comment {rng.randint(0, 1 << 30)}")
                out.append("EXPOSE 8080/tcp 9090")
            else:
                out.append("USER 1000:1000")
        stage += 1
    return "\n".join(out[:lines]) + "\n"


def _ensure_dockerfile_parse() -> None:
    """pip install the comparison package if it is missing; carry on without it if that fails."""
    try:
        import dockerfile_parse  # noqa: F401
    except ImportError:
        import subprocess

        print("dockerfile-parse missing: trying pip install dockerfile-parse ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "dockerfile-parse"],
                       check=False, timeout=300)


def best_of(fn, runs: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(runs):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile one full parse")
    ap.add_argument("--no-install", action="store_true",
                    help="do not try to pip install dockerfile-parse when it is missing")
    args = ap.parse_args()
    if not args.no_install:
        _ensure_dockerfile_parse()

    text = make_dockerfile(args.lines, args.seed)
    parse_dockerfile("FROM a\nCMD [\"x\"]\nRUN --mount=type=cache,target=/x true\n")  # warm lark
    if args.profile:
        import cProfile
        import pstats

        cProfile.runctx("parse_dockerfile(text)", globals(), {"text": text}, "/tmp/bench_parse.prof")
        pstats.Stats("/tmp/bench_parse.prof").sort_stats("cumulative").print_stats(25)
        return 0

    n_instr = len(parse_syntax(text).nodes)
    contenders = {
        "irctl parse_syntax": lambda: parse_syntax(text),
        "irctl parse_dockerfile": lambda: parse_dockerfile(text),
    }
    try:
        import io

        from dockerfile_parse import DockerfileParser

        data = text.encode("utf-8")

        def theirs():
            return DockerfileParser(fileobj=io.BytesIO(data), env_replace=False).structure

        seen = sum(1 for i in theirs() if i["instruction"] != "COMMENT")
        if seen != n_instr:
            print(f"  note: dockerfile-parse sees {seen} instructions")
        contenders["dockerfile-parse"] = theirs
    except ImportError:
        theirs = None
    # interleave the contenders so that machine noise hits all of them alike
    # (wall clock and CPU time: on a busy shared machine the CPU time is the steadier figure)
    wall = {name: float("inf") for name in contenders}
    cpu = dict(wall)
    for _ in range(args.runs):
        for name, fn in contenders.items():
            wall[name] = min(wall[name], best_of(fn, 1))
            cpu[name] = min(cpu[name], best_of(fn, 1, time.process_time))
    print(f"input: {args.lines} lines, {len(text):,} bytes, {n_instr} instructions; best of {args.runs}")
    print(f"  {'':24s} {'wall':>9s}    {'cpu':>9s}")
    for name in contenders:
        print(f"  {name:24s} {wall[name] * 1000:9.1f} ms {cpu[name] * 1000:9.1f} ms")
    if theirs is None:
        print("  dockerfile-parse         (not installed: pip install dockerfile-parse; skipped)")
        return 0
    for ours in ("irctl parse_syntax", "irctl parse_dockerfile"):
        print(f"  ratio {ours[6:]:16s} / dockerfile-parse = {wall[ours] / wall['dockerfile-parse']:5.2f}x wall, "
              f"{cpu[ours] / cpu['dockerfile-parse']:5.2f}x cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
