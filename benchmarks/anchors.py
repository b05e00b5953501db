"""Time irctl on the anchor cases (``../shared/anchors/cases``) and print ratios against the other
builders, run side by side on this machine where they are set up.

    python3 benchmarks/anchors.py                  # irctl, plus every anchor tool that is running
    python3 benchmarks/anchors.py -c "cold noop" -n 3 -t buildkit
    python3 benchmarks/anchors.py -c "py-cold py-noop py-edit py-deps" -n 3 -t buildkit
    sudo bash ../shared/anchors/setup.sh           # once, to run BuildKit/buildah/podman side by side

Methodology follows ``anchors/run.sh``: hyperfine ``-N`` with the same ``--prepare`` resets
(an empty build cache for cold cases, a bumped file for ``edit``, a new BUST arg for forced steps),
the same contexts and the same ``127.0.0.1:5000/busybox:latest`` base.

The cold reset is ``irctl cache prune --all --keep-images``: every build result, layer and cache
mount goes, the pulled base image stays (its blobs and unpacked layer), after one warm-up build has
pulled it.  That is what the anchors' BuildKit reset does (``docker builder prune -af`` drops the
build cache, not the pulled ``busybox``), so both sides start from "base image present, nothing
built".  ``--full-reset`` uses ``rm -rf`` of the whole cache dir instead (irctl then also resolves,
pulls and unpacks busybox in every timed run, BuildKit does not); figures before 2026-11-28 11:00
UTC in the README were measured that way.  When the anchors' registry is
not running this script starts Debian's docker-registry on 127.0.0.1:5000 with our own busybox.
Tools that are not set up are reported with the figures recorded in ``anchors/results.json``,
labelled as such — never mixed silently with side-by-side ones.

The realistic cases (``py-*``, ``node-*``, ``c-*``; ``benchmarks/projects/``) build a Flask app
(apt + pip), a Node app (apt + ``npm ci``) and a static C program (gcc builder → busybox) on
``127.0.0.1:5000/debian:bookworm``, with the network: Debian, PyPI and npm.  Each has ``-cold``
(reset as above; both resets also empty the cache mounts, so apt, pip and npm download everything),
``-noop``, ``-edit`` (one source file) and ``-deps`` (the dependency list: a package more or less
and a new stamp, ``projects/mutate.py``; both package sets were installed once before timing, so
the package caches hold them).  irctl exports ``--output type=oci`` (a tar) every time; BuildKit
loads into dockerd's store (dockerd 20.10's BuildKit has no OCI exporter).  BuildKit's steps use
``--network host`` — this dockerd runs without a bridge, so host is the only network it has — and
irctl's its default private network (slirp4netns) unless ``--irctl-network host``.  Their runs are
interleaved (irctl, BuildKit, irctl, …: one hyperfine run each), so a slow minute of the mirrors
or of the shared VM hits both.  The host's CA bundle is copied into each context as ``ca.crt`` and
bind-mounted over the image's: this machine's egress proxy re-signs TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
ANCHORS = TOP.parent / "shared" / "anchors"
WORK = Path(os.environ.get("IRCTL_BENCH_WORK", "/var/tmp/irctl-bench"))
REGISTRY = "127.0.0.1:5000"
CASES = ("cold", "noop", "edit", "cachemount", "secret", "bigctx", "bigctx-noop", "export", "export-oci")
IRCTL = [sys.executable, "-m", "irctl"]
PROJECTS_DIR = TOP / "benchmarks" / "projects"
# case prefix → (directory under projects/, the file a source edit changes, the files of the dependency list)
PROJECTS = {
    "py": ("flask", "app.py", ("requirements.txt",)),
    "node": ("node", "server.js", ("package.json", "package-lock.json")),
    "c": ("cgcc", "main.c", ("Makefile",)),
}
PROJECT_KINDS = ("cold", "noop", "edit", "deps")
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
IRCTL_NETWORK = "default"  # --irctl-network


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def registry_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2):
            return True
    except OSError:
        return False


def ensure_registry() -> subprocess.Popen | None:
    """The anchors' registry if it runs, else our own on the same address with our busybox."""
    if registry_up():
        return None
    data = WORK / "registry"
    data.mkdir(parents=True, exist_ok=True)
    conf = WORK / "registry.yml"
    conf.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {data}\n"
                    f"http:\n  addr: {REGISTRY}\nlog:\n  level: error\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        if registry_up():
            break
        time.sleep(0.1)
    layout = WORK / "busybox-layout"
    if not layout.exists():
        sh([sys.executable, "-m", "tests.support.baseimage", str(layout)], cwd=TOP, stdout=subprocess.DEVNULL)
    sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
        f"docker://{REGISTRY}/busybox:latest"])
    return proc


def prepare_contexts(cases: list[str]) -> Path:
    ctx = WORK / "ctx"
    for case in (ANCHORS / "cases").iterdir():
        dest = ctx / case.name
        if case.name == "bigctx":
            if not any(c.startswith(("bigctx", "export")) for c in cases):
                continue  # its 200 MB are generated only for the cases that build it
            dest.mkdir(parents=True, exist_ok=True)
            for f in case.iterdir():
                if f.is_file():
                    shutil.copy2(f, dest)
            if not (dest / "data").exists():
                sh([sys.executable, str(ANCHORS / "lib" / "gen_bigctx.py"), str(dest / "data")],
                   stdout=subprocess.DEVNULL)
        else:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(case, dest, symlinks=True)
    (WORK / "secret").mkdir(exist_ok=True)
    (WORK / "secret" / "tok").write_text("irctl-bench-secret-" + os.urandom(12).hex() + "\n")
    return ctx


def prepare_projects() -> Path:
    """Work copies of the realistic projects (edits never touch the checked-in ones) and of their
    alternate dependency lists, each context with the host's CA bundle as ``ca.crt``."""
    ctx = WORK / "projects"
    for name, _, _ in PROJECTS.values():
        for src, dest in ((PROJECTS_DIR / name, ctx / name), (PROJECTS_DIR / f"{name}.deps", ctx / f"{name}.deps")):
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, symlinks=True)
        shutil.copyfile(CA_BUNDLE, ctx / name / "ca.crt")
    return ctx


def project_case(case: str) -> tuple[str, str, tuple[str, ...], str] | None:
    """(project directory, source file, dependency files, kind) of a realistic case, else None."""
    prefix, _, kind = case.rpartition("-")
    if prefix not in PROJECTS or kind not in PROJECT_KINDS:
        return None
    return (*PROJECTS[prefix], kind)


def project_prepare(case: str, ctx: Path) -> tuple[str | None, list[str] | None]:
    """(--prepare command of the timed runs, the dependency edit as a warm-up command)."""
    name, src, deps, kind = project_case(case)
    mutate = [sys.executable, str(PROJECTS_DIR / "mutate.py")]
    swap = [*mutate, "deps", str(ctx / name), str(ctx / f"{name}.deps"), *deps]
    if kind == "edit":
        return shlex.join([*mutate, "edit", str(ctx / name / src)]), None
    if kind == "deps":
        return shlex.join(swap), swap
    return None, None


def compile_bytecode() -> None:
    """Write irctl's ``__pycache__`` as an installed package has it (pip compiles on install).  An
    editable checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as in CI shells) otherwise recompiles
    every module from source on every build: ~0.3 s of CPU per invocation."""
    sh([sys.executable, "-m", "compileall", "-q", *(str(TOP / p) for p in ("irctl", "backend", "ir", "frontends"))],
       stdout=subprocess.DEVNULL)


# --------------------------------------------------------------------------- irctl commands


def irctl_build(case_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [*IRCTL, "build", "--progress", "quiet", "--cache-dir", str(cache), "-t", f"anchor/{case_dir.name}",
            *extra, str(case_dir)]


FULL_RESET = False  # --full-reset: cold cases start from an empty cache dir (no base image either)


def irctl_commands(case: str, ctx: Path) -> tuple[list[str], str | None, list[list[str]]]:
    """(timed command, --prepare command, warm-up commands run once before timing)."""
    cache = WORK / "cache" / case
    if FULL_RESET:
        reset, pull = f"rm -rf {cache}", []
    else:  # the build cache goes, the pulled base stays (see the module docstring)
        reset = " ".join([*IRCTL, "cache", "prune", "--all", "--keep-images", "--cache-dir", str(cache)])
        pull = [irctl_build(ctx / case, cache)]
    if project_case(case):
        name, _, _, kind = project_case(case)
        net = [] if IRCTL_NETWORK == "default" else ["--network", IRCTL_NETWORK] + (
            ["--allow", "network.host"] if IRCTL_NETWORK == "host" else [])  # as a user types it
        cmd = irctl_build(ctx / name, cache, *net, "--output", f"type=oci,dest={WORK}/out/{case}.tar")
        prepare, swap = project_prepare(case, ctx)
        if kind == "cold":
            return cmd, reset, [cmd]
        return cmd, prepare, [cmd, *([swap, cmd] if swap else [])]
    bust = ["--build-arg", f"BUST={time.time_ns()}"]
    if case == "cold":
        return irctl_build(ctx / "cold", cache), reset, pull
    if case == "noop":
        cmd = irctl_build(ctx / "cold", cache)
        return cmd, None, [cmd]
    if case == "edit":
        cmd = irctl_build(ctx / "edit", cache)
        return cmd, f"{ANCHORS}/lib/bump.sh {ctx}/edit/app/stamp.txt", [cmd]
    if case == "cachemount":
        # BUST must change on every run: hyperfine runs the same argv, so a wrapper bumps it.
        return ["sh", "-c", " ".join(irctl_build(ctx / "cachemount", cache)) + ' --build-arg "BUST=$(date +%s%N)"'], \
            None, [irctl_build(ctx / "cachemount", cache, *bust)]
    if case == "secret":
        sec = ["--secret", f"id=tok,src={WORK}/secret/tok"]
        return ["sh", "-c", " ".join(irctl_build(ctx / "secret", cache, *sec)) + ' --build-arg "BUST=$(date +%s%N)"'], \
            None, []
    if case == "bigctx":
        return irctl_build(ctx / "bigctx", cache), reset, pull
    if case == "bigctx-noop":
        cmd = irctl_build(ctx / "bigctx", cache)
        return cmd, None, [cmd]
    if case == "export":
        out = WORK / "out" / "export.tar"
        cmd = irctl_build(ctx / "bigctx", WORK / "cache" / "bigctx-noop", "--output",
                          f"type=docker,dest={out},compression=none")
        return cmd, None, [irctl_build(ctx / "bigctx", WORK / "cache" / "bigctx-noop")]
    if case == "export-oci":
        out = WORK / "out" / "export-oci.tar"
        cmd = irctl_build(ctx / "bigctx", WORK / "cache" / "bigctx-noop", "--output", f"type=oci,dest={out}")
        # the compressed-blob cache would make later runs free; measure a first export each time
        return cmd, f"rm -rf {WORK}/cache/bigctx-noop/blobs.db", [irctl_build(ctx / "bigctx", WORK / "cache" / "bigctx-noop")]
    raise ValueError(case)


def anchor_commands(tool: str, case: str, ctx: Path) -> tuple[list[str], str | None, list[list[str]]]:
    tool_sh = str(ANCHORS / "lib" / "tool.sh")
    build = [tool_sh, "build", tool]
    if project_case(case):
        name, _, _, kind = project_case(case)
        tag = f"bench/{case}"
        # tool.sh builds with --network none; the later flag wins (host: dockerd has no bridge here)
        cmd = [*build, str(ctx / name), tag, "--", "--network", "host"]
        prepare, swap = project_prepare(case, ctx)
        if kind == "cold":
            return cmd, f"{tool_sh} reset {tool} {tag}", []
        return cmd, prepare, [cmd, *([swap, cmd] if swap else [])]
    tag = f"anchor/{'cold' if case == 'noop' else case}"
    if case == "cold":
        return [*build, str(ctx / "cold"), tag], f"{tool_sh} reset {tool} {tag}", []
    if case == "noop":
        cmd = [*build, str(ctx / "cold"), tag]
        return cmd, None, [cmd]
    if case == "edit":
        cmd = [*build, str(ctx / "edit"), tag]
        return cmd, f"{ANCHORS}/lib/bump.sh {ctx}/edit/app/stamp.txt", [cmd]
    if case == "cachemount":
        return [*build, str(ctx / "cachemount"), tag, "--bust"], None, []
    if case == "secret":
        return [*build, str(ctx / "secret"), tag, "--bust", "--", "--secret", f"id=tok,src={WORK}/secret/tok"], None, []
    if case == "bigctx":
        return [*build, str(ctx / "bigctx"), tag], f"{tool_sh} reset {tool} {tag}", []
    if case == "bigctx-noop":
        cmd = [*build, str(ctx / "bigctx"), "anchor/bigctx"]
        return cmd, None, [cmd]
    if case in ("export", "export-oci"):
        fmt = "docker" if case == "export" else "oci"
        return [tool_sh, "export", tool, "anchor/bigctx", str(WORK / "out" / f"{tool}-{case}.tar"), fmt], None, \
            [[*build, str(ctx / "bigctx"), "anchor/bigctx"]]
    raise ValueError(case)


# --------------------------------------------------------------------------- timing


def timed(cmd: list[str], prepare: str | None, warmups: list[list[str]], runs: int) -> list[float]:
    for w in warmups:
        subprocess.run(w, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not runs:
        return []
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            args = ["hyperfine", "-N", "--style", "none", "--runs", str(runs), "--export-json", f.name]
            if prepare:
                args += ["--prepare", prepare]
            # quoted: hyperfine -N splits the command into words itself, and a plain join would hand
            # ``sh -c`` only the first word of its script (the interpreter, which then reads an
            # empty stdin and exits 0: a "build" of 55 ms)
            subprocess.run([*args, shlex.join(cmd)], check=True, stdout=subprocess.DEVNULL)
            return json.load(open(f.name))["results"][0]["times"]
    times = []
    for _ in range(runs):
        if prepare:
            subprocess.run(prepare, shell=True, check=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def timed_interleaved(specs: dict[str, tuple[list[str], str | None, list[list[str]]]],
                      runs: int) -> dict[str, list[float]]:
    """Times of each tool's (command, prepare, warm-ups), taking turns run by run: network steps
    and a shared VM drift over minutes, and turns spread the drift over every tool alike."""
    times: dict[str, list[float]] = {}
    for tool, (cmd, _, warmups) in specs.items():
        try:
            timed(cmd, None, warmups, runs=0)
            times[tool] = []
        except subprocess.CalledProcessError as e:  # dropped from this case, reported
            print(f"  {tool}: warm-up {shlex.join(e.cmd)} failed", flush=True)
    for _ in range(runs):
        for tool, (cmd, prepare, _) in specs.items():
            if tool not in times:
                continue
            try:
                times[tool] += timed(cmd, prepare, [], runs=1)
            except subprocess.CalledProcessError:  # one tool's failure keeps the others' runs
                print(f"  {shlex.join(cmd)}: failed", flush=True)
    return {tool: t for tool, t in times.items() if t}


def anchors_running() -> set[str]:
    """Anchor tools usable side by side right now."""
    tools = set()
    if not (ANCHORS / "lib" / "tool.sh").exists():
        return tools
    if Path("/run/anchor-docker.sock").exists() and shutil.which("docker"):
        tools.add("buildkit")
    if shutil.which("buildah"):
        tools |= {"buildah", "buildah-rootless"}
    if shutil.which("podman"):
        tools.add("podman")
    return tools


def recorded() -> dict[tuple[str, str], float]:
    try:
        data = json.loads((ANCHORS / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return {(r["tool"], r["case"]): r["median"] for r in data.get("bench", []) if r.get("status") == "ok"}


def parallel_span(ctx: Path, runs: int) -> list[tuple[float, float]]:
    """The ``cold`` case's parallelism, from the build's own events: for each run (after the same
    reset as the timed runs), the span from the first of the four independent stages' steps
    starting to the last one finishing, and the longest single stage's own time.  Fixed costs
    (start-up, the final stage) are outside both, so span / longest measures only how well the
    independent stages overlap: 1.0 is perfect, N is one after another."""
    cmd, reset, pull = irctl_commands("cold", ctx)
    for c in pull:
        sh(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = []
    for _ in range(runs):
        sh(["sh", "-c", reset], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        json_cmd = [*cmd[:cmd.index("--progress") + 1], "json", *cmd[cmd.index("--progress") + 2:]]
        p = subprocess.run(json_cmd, capture_output=True, text=True, check=True)
        starts: dict[str, float] = {}
        branches: dict[str, list[float]] = {}  # stage → [first start, last end]
        for line in p.stderr.splitlines():
            if not line.startswith("{"):
                continue
            e = json.loads(line)
            if e["group"] not in ("s1", "s2", "s3", "s4"):
                continue
            if e["kind"] == "started":
                starts[e["op"]] = e["time"]
            elif e["kind"] == "finished" and e["op"] in starts:
                span = branches.setdefault(e["group"], [starts[e["op"]], e["time"]])
                span[0], span[1] = min(span[0], starts[e["op"]]), max(span[1], e["time"])
        if len(branches) != 4:
            raise SystemExit(f"parallel span: expected events of stages s1-s4, got {sorted(branches)}")
        first = min(b[0] for b in branches.values())
        last = max(b[1] for b in branches.values())
        out.append((last - first, max(b[1] - b[0] for b in branches.values())))
    return out


def project_row(case: str, ctx: Path, tools: list[str], runs: int) -> dict:
    """A realistic case, irctl and the live tools taking turns (``timed_interleaved``); each run's
    times are printed as they come, the row holds the medians."""
    specs = {"irctl": irctl_commands(case, ctx)}
    for tool in tools:
        specs[tool] = anchor_commands(tool, case, ctx)
    times = timed_interleaved(specs, runs)
    for tool, t in times.items():
        print(f"  {case} {tool}: " + " ".join(f"{x:.2f}" for x in t), flush=True)
    it = times.pop("irctl", None) or [float("nan")]
    row = {"case": case, "irctl": statistics.median(it), "min": min(it), "max": max(it)}
    row.update({tool: (statistics.median(t), "side by side") for tool, t in times.items()})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--cases", default=" ".join(CASES))
    ap.add_argument("-t", "--tools", default="buildkit buildah", help="anchor tools to compare with")
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--full-reset", action="store_true",
                    help="cold cases: rm -rf the cache dir before each run (base image pulled every time)")
    ap.add_argument("--irctl-network", default="default", choices=("default", "host", "none"),
                    help="network of irctl's RUN steps in the realistic cases (BuildKit's is host)")
    args = ap.parse_args()
    global FULL_RESET, IRCTL_NETWORK
    FULL_RESET, IRCTL_NETWORK = args.full_reset, args.irctl_network
    if os.geteuid() != 0:
        sys.exit("run as root (irctl builds with runc and overlay mounts; the anchor tools need root too)")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "out").mkdir(exist_ok=True)
    own_registry = ensure_registry()
    ctx = prepare_contexts(args.cases.split())
    pctx = prepare_projects()
    compile_bytecode()
    live = anchors_running()
    old = recorded()
    tools = args.tools.split()
    rows = []
    try:
        for case in args.cases.split():
            if project_case(case):
                rows.append(project_row(case, pctx, [t for t in tools if t in live], args.runs))
                print(_line(rows[-1], tools), flush=True)
                continue
            times = timed(*irctl_commands(case, ctx), runs=args.runs)
            row = {"case": case, "irctl": statistics.median(times), "min": min(times), "max": max(times)}
            for tool in tools:
                if tool in live:
                    try:
                        t = timed(*anchor_commands(tool, case, ctx), runs=args.runs)
                    except subprocess.CalledProcessError:  # e.g. BuildKit in dockerd has no OCI export
                        print(f"{case}: {tool} failed (see ../shared/anchors/results.md for what it supports)")
                        continue
                    row[tool] = (statistics.median(t), "side by side")
                elif (tool, case) in old:
                    row[tool] = (old[(tool, case)], "recorded")
            rows.append(row)
            print(_line(row, tools), flush=True)
            if case == "cold":
                spans = parallel_span(ctx, args.runs)
                ratios = sorted(span / longest for span, longest in spans)
                print(f"cold: the 4 independent stages span {statistics.median([s for s, _ in spans]):.3f} s against "
                      f"{statistics.median([lo for _, lo in spans]):.3f} s for the longest alone: ratio "
                      f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}; 1.0 = perfectly parallel)",
                      flush=True)
    finally:
        if own_registry is not None:
            own_registry.terminate()
    print()
    print("| case | irctl s (min-max) | " + " | ".join(f"{t} s | irctl/{t}" for t in tools) + " |")
    print("|---|---|" + "---|---|" * len(tools))
    for row in rows:
        cells = [f"{row['irctl']:.3f} ({row['min']:.3f}-{row['max']:.3f})"]
        for t in tools:
            if t in row:
                v, how = row[t]
                mark = "" if how == "side by side" else "*"
                cells += [f"{v:.3f}{mark}", f"{row['irctl'] / v:.2f}"]
            else:
                cells += ["-", "-"]
        print(f"| {row['case']} | " + " | ".join(cells) + " |")
    if any(how == "recorded" for row in rows for t in tools if t in row for _, how in [row[t]]):
        print("\n* recorded in ../shared/anchors/results.json on this kind of machine, not run side by side "
              "(run `sudo bash ../shared/anchors/setup.sh` first to compare live)")


def _line(row: dict, tools: list[str]) -> str:
    parts = [f"{row['case']:<12} irctl {row['irctl']:.3f}s"]
    for t in tools:
        if t in row:
            v, how = row[t]
            parts.append(f"{t} {v:.3f}s ({how}) ratio {row['irctl'] / v:.2f}")
    return "  ".join(parts)


if __name__ == "__main__":
    main()
