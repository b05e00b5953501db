"""Layer export speed: ``write_layer`` (gzip, zstd) against ``tar -cf - . | gzip`` / ``| zstd``.

    python benchmarks/bench_export.py [--files 20000] [--size 10240] [--seed 1] [--runs 3]

Builds a seeded tree (files are slices of a seeded pseudo-text pool plus a random tail, so they
compress like source code, not like zeros or noise), warms the page cache, then reports the best of
``--runs`` wall-clock times, the output sizes and our time / command-line time ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.oci.layertar import write_layer  # noqa: E402


def make_tree(root: Path, files: int, size: int, seed: int) -> None:
    rng = random.Random(seed)
    words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "value", "layer", "digest",
             "None", "True", "path", "os", "data", "0x%04x", "(", ")", ":", "=", "+", "[", "]", "\n", "    "]
    pool = " ".join(rng.choice(words) for _ in range(400_000)).encode()[: 1 << 21]
    per_dir = 200
    for i in range(files):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        off = rng.randrange(0, len(pool) - size)
        tail = rng.randbytes(64)
        (d / f"f{i:05d}.txt").write_bytes(pool[off:off + size - 64] + tail)


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=10 * 1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed afterwards)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-export-"))
    tree, out = work / "tree", work / "out"
    try:
        t = time.perf_counter()
        make_tree(tree, args.files, args.size, args.seed)
        total = args.files * args.size
        print(f"tree: {args.files} files x {args.size} B = {total / 2**20:.0f} MiB "
              f"(made in {time.perf_counter() - t:.1f}s), best/median of {args.runs}, {os.cpu_count()} CPUs")
        subprocess.run(f"tar -cf - . > /dev/null", shell=True, cwd=tree, check=True)  # warm the page cache

        def ours(compression: str, threads: int = 0):
            def run() -> None:
                with open(out, "wb") as f:
                    write_layer(tree, f, compression=compression, threads=threads)
            return run

        def cli(cmd: str):
            return lambda: subprocess.run(f"{cmd} > {out}", shell=True, cwd=tree, check=True)

        cases = [
            ("gzip", "write_layer gzip -6", ours("gzip"), "tar -cf - . | gzip", cli("tar -cf - . | gzip -6")),
            ("zstd", "write_layer zstd -3", ours("zstd"), "tar -cf - . | zstd", cli("tar -cf - . | zstd -3 -q -c")),
            ("zstd-T2", "write_layer zstd -3 threads=2", ours("zstd", 2), "tar -cf - . | zstd -T2",
             cli("tar -cf - . | zstd -3 -T2 -q -c")),
            ("none", "write_layer none", ours("none"), "tar -cf - .", cli("tar -cf - .")),
        ]
        print(f"{'':8} {'ours (s)':>18} {'size MiB':>9}   {'command line (s)':>18} {'size MiB':>9}   ratio")
        for key, _, fn, _, cmd in cases:
            o_best, o_med = best(fn, args.runs)
            o_size = out.stat().st_size
            c_best, c_med = best(cmd, args.runs)
            c_size = out.stat().st_size
            print(f"{key:8} {o_best:8.2f} / {o_med:7.2f} {o_size / 2**20:9.1f}   {c_best:8.2f} / {c_med:7.2f} "
                  f"{c_size / 2**20:9.1f}   {o_best / c_best:5.2f}x")
        print("ratio = our best time / command-line best time (below 1.0: we are faster)")
        for _, ours_name, _, cmd_name, _ in cases:
            print(f"  {ours_name:32} vs  {cmd_name}")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
