"""A build farm on one machine: does wall time follow total work ÷ workers (issue 16)?

    python3 benchmarks/farm.py                    # 2 then 4 workers, 3 timed builds each
    python3 benchmarks/farm.py -w "1 2 4" -n 5 --steps 8 --seconds 2

The graph: ``--steps`` independent stages, each ``RUN sleep SECONDS && echo I SALT > /I`` on busybox,
merged into the final stage with ``COPY --from`` (file ops, run by the client). Built with
``irctl build --remote grpc://…`` against a BuildGrid server of its own per worker count (an empty one:
``tests/support/buildgrid.py`` starts it, on a throwaway PostgreSQL cluster, on loopback), with that
many ``irctl worker --jobs 1`` processes, each with its own cache dir (machines in miniature: they share
this machine's 2 cores, which a sleep does not use). Each timed build has a new salt (no step is cached
anywhere) and an empty client cache dir; one untimed build first lets every worker fetch the base image,
as a farm that has been up for a while has. The model: wall ≈ steps × seconds ÷ workers (the ideal);
the issue's bar is ≤ 1.2 × the ideal, plus start-up.

Printed per worker count (medians): the wall time of ``irctl build``; the graph span (first remote
step started → last finished, the client's JSON progress), which is the wall time less the start-up
(frontend, base image, the final COPYs and export); the ideal; both ratios; and the overhead per remote
step, (wall − ideal) ÷ steps as the issue defines it and (span − ideal) ÷ rounds (rounds = steps ÷
workers: a round's overhead is what each step adds to the critical path). Where it goes (means, which
add up), from the REAPI ``ExecutedActionMetadata`` the worker reports (BuildGrid keeps it in its ``jobs``
table):
queued (client's Execute → a worker took the lease: BuildGrid's assigner and the bot's long-poll),
input fetch (step envelope and layers from the CAS), execution (the step's container, incl. its
start-up), output upload (result blobs to the CAS), and what is left of the client's step time
(uploading inputs before Execute, the result's round trip, registering it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from tests.support import buildgrid as bg  # noqa: E402  (the test suite's BuildGrid, not a second copy)
from tests.support.baseimage import make_busybox_layout  # noqa: E402

IRCTL = [sys.executable, "-m", "irctl"]

# Each phase of a remote step, from the timestamps BuildGrid keeps per job: the server's own (queued) and
# those of the ExecutedActionMetadata the worker reports (a phase it does not report is left out).
PHASES = {"queued": ("queued_timestamp", "worker_start_timestamp"),
          "on the worker": ("worker_start_timestamp", "worker_completed_timestamp"),
          "input fetch": ("input_fetch_start_timestamp", "input_fetch_completed_timestamp"),
          "execution": ("execution_start_timestamp", "execution_completed_timestamp"),
          "output upload": ("output_upload_start_timestamp", "output_upload_completed_timestamp"),
          "on the server": ("queued_timestamp", "worker_completed_timestamp")}


def dockerfile(steps: int, seconds: float, salt: str) -> str:
    stages = "".join(f"FROM base AS s{i}\nRUN sleep {seconds:g} && echo {i} {salt} > /{i}\n\n" for i in range(steps))
    merge = "".join(f"COPY --from=s{i} /{i} /{i}\n" for i in range(steps))
    return f"{stages}FROM base\n{merge}"


def build(ctx: Path, layout: Path, url: str, cache: Path, steps: int, seconds: float) -> tuple[float, list[dict]]:
    """One ``irctl build --remote`` from an empty client cache dir: (wall seconds, its JSON events)."""
    (ctx / "Dockerfile").write_text(dockerfile(steps, seconds, uuid.uuid4().hex))
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [*IRCTL, "build", "--remote", url, "--cache-dir", str(cache), "--progress", "json",
           "--build-context", f"base=oci-layout://{layout}", str(ctx)]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"farm.py: irctl build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return wall, events


def remote_steps(events: list[dict]) -> list[tuple[float, float, str]]:
    """(started, finished, text) of each RUN step, from the client's progress events."""
    started = {e["op"]: e["time"] for e in events if e["kind"] == "started" and " RUN " in e["description"]}
    return [(started[e["op"]], e["time"], e["text"]) for e in events
            if e["kind"] == "finished" and e["op"] in started]


def phases(server: bg.BuildGrid, skip: int) -> dict[str, float]:
    """Mean seconds of each phase over the server's completed jobs but the first ``skip`` (the warm-up).
    Means, not medians: they add up, so the client's share is its mean step time less the server's."""
    out = {}
    for name, (start, end) in PHASES.items():
        rows = server.sql(f"SELECT EXTRACT(EPOCH FROM {end} - {start}) FROM (SELECT * FROM jobs WHERE stage = 4 "
                          f"ORDER BY queued_timestamp OFFSET {skip}) AS timed "
                          f"WHERE {start} IS NOT NULL AND {end} IS NOT NULL")
        if rows:
            out[name] = statistics.fmean(float(r[0]) for r in rows)
    return out


def run(workers: int, args: argparse.Namespace, cluster: bg.Cluster, layout: Path, work: Path) -> dict:
    with bg.running_server(cluster) as server:
        procs: list[subprocess.Popen] = []
        try:
            for i in range(workers):
                procs.append(bg.start_worker(server.url, work / f"w{workers}-{i}", f"bench-{workers}-{i}", jobs=1))
            ctx = work / "ctx"
            ctx.mkdir(exist_ok=True)
            build(ctx, layout, server.url, work / "client", args.steps, args.seconds)  # workers fetch the base
            walls, spans, per_step = [], [], []
            for _ in range(args.runs):
                wall, events = build(ctx, layout, server.url, work / "client", args.steps, args.seconds)
                steps = remote_steps(events)
                if len(steps) != args.steps or not all(t.startswith("on bench-") for _, _, t in steps):
                    sys.exit(f"farm.py: expected {args.steps} RUN steps on the workers, progress showed "
                             f"{[t for _, _, t in steps]}")
                walls.append(wall)
                spans.append(max(f for _, f, _ in steps) - min(s for s, _, _ in steps))
                per_step.extend(f - s for s, f, _ in steps)
                print(f"  {workers} workers: wall {wall:.2f}s, graph span {spans[-1]:.2f}s; "
                      + ", ".join(sorted({t for _, _, t in steps})), flush=True)
            return {"workers": workers, "wall": statistics.median(walls), "span": statistics.median(spans),
                    "client step": statistics.fmean(per_step), "phases": phases(server, skip=args.steps)}
        finally:
            for proc in procs:
                bg.stop_worker(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workers", default="2 4", help="worker counts to try (default: '2 4')")
    parser.add_argument("-n", "--runs", type=int, default=3, help="timed builds per worker count")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="each step's sleep")
    args = parser.parse_args()
    reason = bg.missing()
    if reason:
        sys.exit(f"farm.py: {reason}")
    work = Path(tempfile.mkdtemp(prefix="irctl-farm-bench-"))
    cluster = bg.Cluster()
    rows = []
    try:
        layout = make_busybox_layout(work / "busybox")
        cluster.start()
        for n in (int(w) for w in args.workers.split()):
            rows.append(run(n, args, cluster, layout, work))
    finally:
        cluster.remove()
        shutil.rmtree(work, ignore_errors=True)
    report(rows, args)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{args.steps} independent steps of {args.seconds:g} s, --jobs 1 per worker, medians of {args.runs}:")
    print("| workers | wall | graph span | ideal | wall/ideal | span/ideal | (wall−ideal)/steps | (span−ideal)/rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ideal = args.steps * args.seconds / r["workers"]
        rounds = -(-args.steps // r["workers"])
        print(f"| {r['workers']} | {r['wall']:.2f} s | {r['span']:.2f} s | {ideal:.2f} s | {r['wall'] / ideal:.2f} "
              f"| {r['span'] / ideal:.2f} | {(r['wall'] - ideal) / args.steps:.3f} s "
              f"| {(r['span'] - ideal) / rounds:.3f} s |")
    print(f"\nWhere a remote step's time goes (means over the timed steps, seconds; the step itself sleeps "
          f"{args.seconds:g} s):")
    for r in rows:
        ph = dict(r["phases"])
        parts = [f"client step {r['client step']:.3f}"]
        if "on the server" in ph:
            parts.append(f"client only (inputs uploaded before Execute, result back and registered) "
                         f"{r['client step'] - ph.pop('on the server'):.3f}")
        if "queued" in ph:
            parts.append(f"queued {ph.pop('queued'):.3f}")
        if "on the worker" in ph:
            worker = ph.pop("on the worker")
            inner = {k: ph.pop(k) for k in ("input fetch", "execution", "output upload") if k in ph}
            shown = [f"{k} {v:.3f}" + (f" (the container's own {v - args.seconds:.3f})" if k == "execution" else "")
                     for k, v in inner.items()]
            if len(inner) == 3:
                shown.append(f"the rest {worker - sum(inner.values()):.3f}")
            parts.append(f"on the worker {worker:.3f} (+{worker - args.seconds:.3f}" + (": " + ", ".join(shown) if
                                                                                     shown else "") + ")")
        print(f"  {r['workers']} workers: " + ", ".join(parts))


if __name__ == "__main__":
    main()
