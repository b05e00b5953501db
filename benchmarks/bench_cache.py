"""A CI runner that starts empty, with a shared cache in a registry: irctl ``--cache-from`` against
BuildKit's ``--cache-from`` of an inline cache, and against merely pulling the final image
(issue 14: irctl ≤ 1.0× BuildKit, ≤ 1.2× the pull).

    python3 benchmarks/bench_cache.py                    # cases cold and py, 5 runs each
    python3 benchmarks/bench_cache.py -c "cold py node" -n 7
    sudo bash ../shared/anchors/setup.sh                 # once: BuildKit in dockerd, the registry

Cases: the anchors' ``cold`` (four 2 s stages merged by a fifth, on busybox) and the realistic
projects of ``anchors.py`` (``py``: Flask on Debian with apt and pip, ``node``: apt and npm,
``c``: gcc → busybox); their warm-up builds reach Debian, PyPI and npm, the timed ones run no step.

Warm-up, once per case (the "first machine"):
  irctl     ``build --cache-to type=registry,ref=R/bench-CASE:cache,mode=max -t R/bench-CASE:v1 --push``
  BuildKit  ``docker build --build-arg BUILDKIT_INLINE_CACHE=1 -t R/bench-CASE:bk`` + ``docker push``

Timed, each run from a fresh state (the "next runner"), taking turns run by run (``anchors.py``'s
``timed_interleaved``: a slow minute of the shared VM hits every column alike):
  irctl        a cache dir holding the base image only (pulled and unpacked, nothing built: what
               dockerd holds for BuildKit, see below), ``--cache-from R/bench-CASE:cache
               -t R/bench-CASE:ci --push``
  irctl-empty  the same from an empty ``--cache-dir``: the base image is fetched and unpacked too
  buildkit     build cache pruned (``docker builder prune -af``) and every image of the case's
               repository removed, then ``docker build --cache-from R/bench-CASE:bk
               -t R/bench-CASE:ci-bk`` + ``docker push``
  irctl-pull   the cache dir with the base image, ``FROM R/bench-CASE:v1`` (the final image itself)
               ``--push``ed under another tag: resolving, fetching and unpacking the image's layers
  docker-pull  ``docker pull R/bench-CASE:v1`` after removing it

The export is the one CI does, build and push: each tool ends with the image usable locally (irctl
unpacks every layer of the result and checks a cache's layers against their names; dockerd's
BuildKit unpacks them into its image store) and pushed (every blob is in the registry already, so
a push is a manifest and a few HEADs on both sides).  The base image (busybox, debian) stays in
dockerd's store between BuildKit's runs, as the anchors set it up (other images share its layers),
so irctl's ``irctl`` and ``irctl-pull`` runs start with it too, as ``anchors.py``'s cold reset does:
a copy of a cache dir that pulled the base and built nothing.  Every reset ends with ``sync``: irctl
makes the layers it commits durable (one ``syncfs`` for a big one), which would otherwise also
write back what the reset itself just wrote.  ``irctl-empty`` is a runner with
nothing at all, which BuildKit is not given here (its ratio is shown for what it is).
``SOURCE_DATE_EPOCH`` is set, so irctl's cached build pushes the very digest of ``v1``: checked
once before timing, with the number of steps that ran (none may).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import anchors  # benchmarks/anchors.py: contexts, the registry, interleaved timing

WORK = anchors.WORK / "shared-cache"
REG = anchors.REGISTRY
DOCKER = ["/usr/bin/docker"]  # Debian's client, as the anchors use it
DOCKER_ENV = {"DOCKER_HOST": "unix:///run/anchor-docker.sock", "DOCKER_BUILDKIT": "1"}
EPOCH = "1700000000"
COLUMNS = ("irctl", "irctl-empty", "buildkit", "irctl-pull", "docker-pull")
BASES = {"cold": ("busybox:latest",), "py": ("debian:bookworm",), "node": ("debian:bookworm",),
         "c": ("debian:bookworm", "busybox:latest")}  # the base images each case's Dockerfile names
Spec = tuple[list[str], str | None, list[list[str]]]  # anchors.timed's (command, --prepare, warm-ups)


def case_context(case: str, ctx: Path, pctx: Path) -> tuple[Path, list[str]]:
    """(context dir, BuildKit's network flags) of a case: the anchors' cases are built offline,
    the projects with the host's network (dockerd here has no bridge)."""
    if anchors.project_case(f"{case}-cold"):
        return pctx / anchors.PROJECTS[case][0], ["--network", "host"]
    return ctx / case, ["--network", "none"]


def refs(case: str) -> dict[str, str]:
    repo = f"{REG}/bench-{case}"
    return {k: f"{repo}:{k}" for k in ("cache", "v1", "ci", "pulled", "bk", "ci-bk")}


def irctl_build(cache: Path, ctx: Path, *extra: str) -> list[str]:
    return [*anchors.IRCTL, "build", "--progress", "quiet", "--cache-dir", str(cache), *extra, str(ctx)]


def docker(*args: str) -> list[str]:
    return [*DOCKER, *args]


def sh(script: str) -> str:
    return shlex.join(["sh", "-c", script])


def warm_up(case: str, ctx: Path, net: list[str]) -> None:
    """The first machine: both tools build from scratch, push the image and the cache."""
    r = refs(case)
    first = WORK / "cache" / f"{case}-first"
    shutil.rmtree(first, ignore_errors=True)
    run(irctl_build(first, ctx, "--cache-to", f"type=registry,ref={r['cache']},mode=max", "-t", r["v1"], "--push"))
    subprocess.run(["sh", "-c", forget(case)], check=True)
    run(docker("build", "-q", *net, "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", r["bk"], str(ctx)))
    run(docker("push", "-q", r["bk"]))
    pull_ctx = WORK / f"pull-{case}"
    pull_ctx.mkdir(parents=True, exist_ok=True)
    (pull_ctx / "Dockerfile").write_text(f"FROM {r['v1']}\n")


def with_base(case: str) -> Path:
    """A cache dir that pulled (and unpacked) the case's base images and built nothing."""
    base = WORK / "cache" / f"{case}-base"
    shutil.rmtree(base, ignore_errors=True)
    for i, image in enumerate(BASES[case]):
        ctx = WORK / f"base-{case}-{i}"
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "Dockerfile").write_text(f"FROM {REG}/{image}\n")
        run(irctl_build(base, ctx))
    return base


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return p


def verify(case: str, ctx: Path) -> str:
    """One irctl run as the timed ones, with plain progress: which steps ran, and the digest pushed."""
    r = refs(case)
    cache = WORK / "cache" / f"{case}-verify"
    shutil.rmtree(cache, ignore_errors=True)
    cmd = irctl_build(cache, ctx, "--cache-from", r["cache"], "-t", r["ci"], "--push")
    p = run([*cmd[:cmd.index("--progress") + 1], "plain", *cmd[cmd.index("--progress") + 2:]])
    titles = dict(re.findall(r"^#(\d+) (\[.*)$", p.stderr, re.M))
    ran = sum(1 for n in re.findall(r"^#(\d+) DONE", p.stderr, re.M) if "] FROM " not in titles.get(n, "] FROM "))
    pushed = re.findall(r"pushed (sha256:\w+)", p.stderr)
    want = run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{r['v1']}"]).stdout.encode()
    v1 = "sha256:" + hashlib.sha256(want).hexdigest()
    same = "the digest of v1" if pushed == [v1] else f"{pushed} ≠ v1 {v1}"
    imported = re.findall(r"cache \S+: (\d+) steps imported", p.stderr)
    fetched = re.findall(r"shared caches: (.*) of layers fetched", p.stderr)
    return (f"{case}: irctl --cache-from pushed {same}; {ran} steps ran, {imported[0] if imported else 0} imported, "
            f"{fetched[0] if fetched else '0 MB'} of cache layers fetched")


def commands(case: str, ctx: Path, net: list[str], base: Path) -> dict[str, Spec]:
    """Each column's (timed command, --prepare command, warm-ups)."""
    r = refs(case)
    cache = WORK / "cache" / case
    empty = sh(f"{shlex.join(['rm', '-rf', str(cache)])} && sync")
    fresh = sh(f"{shlex.join(['rm', '-rf', str(cache)])} && {shlex.join(['cp', '-a', str(base), str(cache)])} && sync")
    bk = shlex.join(docker("build", "-q", *net, "--cache-from", r["bk"], "-t", r["ci-bk"], str(ctx)))
    return {
        "irctl": (irctl_build(cache, ctx, "--cache-from", r["cache"], "-t", r["ci"], "--push"), fresh, []),
        "irctl-empty": (irctl_build(cache, ctx, "--cache-from", r["cache"], "-t", r["ci"], "--push"), empty, []),
        "buildkit": (["sh", "-c", f"{bk} >/dev/null && {shlex.join(docker('push', '-q', r['ci-bk']))} >/dev/null"],
                     sh(forget(case)), []),
        "irctl-pull": (irctl_build(cache, WORK / f"pull-{case}", "-t", r["pulled"], "--push"), fresh, []),
        "docker-pull": (docker("pull", "-q", r["v1"]), sh(forget(case)), []),
    }


def forget(case: str) -> str:
    """dockerd as a new runner has it: no image of the case's repository under any tag (a tag left
    behind keeps its layers, and BuildKit then has nothing to fetch), and no build cache."""
    images = shlex.join(docker("images", "-q", f"{REG}/bench-{case}"))
    return (f"{images} | sort -u | xargs -r {shlex.join(docker('image', 'rm', '-f'))} >/dev/null 2>&1; "
            f"{shlex.join(docker('builder', 'prune', '-af'))} >/dev/null; sync")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--cases", default="cold py", help="cold and/or projects: py, node, c")
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--no-warm-up", action="store_true", help="reuse the caches and images a previous run pushed")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (irctl builds with runc and overlay mounts; dockerd's socket is root's)")
    if not Path(DOCKER_ENV["DOCKER_HOST"][len("unix://"):]).exists() or not anchors.registry_up():
        sys.exit("BuildKit (dockerd on /run/anchor-docker.sock) or the registry is not up: "
                 "run `sudo bash ../shared/anchors/setup.sh` first")
    os.environ.update(DOCKER_ENV, SOURCE_DATE_EPOCH=EPOCH)
    WORK.mkdir(parents=True, exist_ok=True)
    cases = args.cases.split()
    ctx = anchors.prepare_contexts([c for c in cases if not anchors.project_case(f"{c}-cold")])
    pctx = anchors.prepare_projects()
    anchors.compile_bytecode()
    started, load0 = now(), load()
    print(f"started {started}, {load0}", flush=True)
    rows = []
    for case in cases:
        cdir, net = case_context(case, ctx, pctx)
        if not args.no_warm_up:
            t0 = time.monotonic()
            warm_up(case, cdir, net)
            print(f"{case}: warm-up (both tools build from scratch and push) took {time.monotonic() - t0:.0f} s",
                  flush=True)
        print(verify(case, cdir), flush=True)
        times = anchors.timed_interleaved(commands(case, cdir, net, with_base(case)), args.runs)
        for col, t in times.items():
            print(f"  {case} {col}: " + " ".join(f"{x:.3f}" for x in t), flush=True)
        rows.append((case, times))
    print(f"\nstarted {started} ({load0}), finished {now()} ({load()})")
    print(f"medians of {args.runs} interleaved runs, each from a fresh state, seconds (min-max)\n")
    print("| case | " + " | ".join(COLUMNS) + " | irctl/BuildKit | irctl/irctl-pull | irctl/docker-pull "
          "| irctl-empty/BuildKit |")
    print("|---|" + "---|" * (len(COLUMNS) + 4))
    for case, times in rows:
        med = {c: statistics.median(times[c]) for c in COLUMNS if times.get(c)}
        cells = [f"{med[c]:.3f} ({min(times[c]):.3f}-{max(times[c]):.3f})" if c in med else "-" for c in COLUMNS]
        ratios = [f"{med[a] / med[b]:.2f}" if a in med and b in med else "-"
                  for a, b in (("irctl", "buildkit"), ("irctl", "irctl-pull"), ("irctl", "docker-pull"),
                               ("irctl-empty", "buildkit"))]
        print(f"| {case} | " + " | ".join(cells + ratios) + " |")
    print("\nbars (issue 14): irctl/BuildKit ≤ 1.0, irctl/irctl-pull ≤ 1.2")


if __name__ == "__main__":
    main()
