"""IR codec speed: encode and decode a 100,000-op graph (best of N wall-clock runs).

    python benchmarks/bench_ir.py [--ops 100000] [--runs 3] [--profile decode|encode]

The graph is a realistic mix built with ``ir.builder``: image and local sources, exec ops with
env, a cache mount and a bind of the context, copies, mkfiles, merges and image ops, each with
metadata pointing into a source file.  "encode" is ``dump_document`` (canonical msgpack + zstd,
digests already cached by the builder, as after a frontend run); "decode" is ``load_document``
on fresh bytes (framing, strict typed decode, every op digest re-verified); "validate" adds the
graph checks (``check_graph``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ir import builder as b  # noqa: E402
from ir import codec, ops, validate  # noqa: E402


def make_lean_graph(n_ops: int) -> ops.Document:
    """A chain of small exec ops and no metadata: about five objects and 200 bytes per op."""
    st = b.image("127.0.0.1:5000/busybox:latest", digest="sha256:" + "ab" * 32)
    for i in range(n_ops - 1):
        st = st.run(["sh", "-c", f"echo {i} >> /log"])
    return b.build_document({"default": st})


def make_graph(n_ops: int) -> ops.Document:
    base = b.image("127.0.0.1:5000/busybox:latest", digest="sha256:" + "ab" * 32)
    ctx = b.local("context", exclude=["*.tmp", ".git"])
    st = base.with_env("PATH", "/usr/local/bin:/usr/bin:/bin").with_cwd("/src")
    made = 2
    targets: dict[str, b.State] = {}
    i = 0
    while made < n_ops:
        loc = ops.Location(file=0, line=i % 5000 + 1, column=1)
        st = st.with_meta(f"[build {i}] step", "build", [loc])
        k = i % 5
        if k == 0:
            st = st.run(["sh", "-c", f"echo step {i} > /out/{i}"], mounts=[b.cache("/root/.cache", "gocache")],
                        env=[f"STEP={i}", "HOME=/root"])
        elif k == 1:
            st = st.copy(ctx, f"src/{i}.c", f"/src/{i}.c", chmod="0644")
        elif k == 2:
            st = st.mkfile(f"/etc/step{i}", f"value {i}\n".encode(), owner=ops.Owner("1000", "1000"))
        elif k == 3:
            st = st.run(["make", f"target{i}"], mounts=[b.bind("/ctx", ctx), b.tmpfs("/tmp")])
        else:
            st = st.with_image(ops.ImageConfig(env=(f"STEP={i}",), cmd=("/bin/sh",), labels={"step": str(i)}),
                               [ops.HistoryEntry(created_by=f"RUN step {i}")])
        made += 1
        i += 1
    targets["default"] = st
    return b.build_document(targets, [ops.SourceFile("Dockerfile", "dockerfile", b"FROM busybox\n" * 100)])


def best(fn, runs: int) -> tuple[float, float]:
    """Best wall-clock (``perf_counter``) and best CPU (``process_time``) time over ``runs``."""
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        del result  # freeing a decoded graph is not part of decoding it
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", choices=["encode", "decode"])
    ap.add_argument("--no-validate", action="store_true", help="time only the codec")
    ap.add_argument("--lean", action="store_true", help="a chain of small exec ops without metadata")
    args = ap.parse_args()

    t = time.perf_counter()
    doc = (make_lean_graph if args.lean else make_graph)(args.ops)
    print(f"built {len(doc.ops)} ops in {time.perf_counter() - t:.2f} s")
    data = codec.dump_document(doc)
    raw = codec.dump_document(doc, compress=False)
    print(f"file: {len(data) / 1e6:.1f} MB zstd, {len(raw) / 1e6:.1f} MB msgpack")
    if args.profile:
        fn = (lambda: codec.dump_document(doc)) if args.profile == "encode" else (lambda: codec.load_document(data))
        cProfile.runctx("fn()", globals(), {"fn": fn}, "/tmp/bench_ir.prof")
        pstats.Stats("/tmp/bench_ir.prof").sort_stats("tottime").print_stats(15)
        return
    enc = best(lambda: codec.dump_document(doc), args.runs)
    # Decode as a fresh `irctl solve graph.irg` would: the builder's graph is gone.
    del doc
    gc.collect()
    dec = best(lambda: codec.load_document(data), args.runs)
    loaded = codec.load_document(data)
    assert codec.dump_document(loaded) == data, "round trip changed the document"
    rows = [("encode   (dump_document)", enc), ("decode   (load_document)", dec)]
    if not args.no_validate:
        rows.append(("validate (check_graph)", best(lambda: validate.check_graph(loaded), args.runs)))
        rows.append(("load_and_validate", best(lambda: validate.load_and_validate(data), args.runs)))
    print(f"best of {args.runs}                        wall      cpu")
    for name, (wall, cpu) in rows:
        print(f"{name:<28} {wall:6.3f} s {cpu:6.3f} s")


if __name__ == "__main__":
    main()
