"""Long fuzz runs of the readers of untrusted input (the quick versions run in the test suite:
``tests/fuzz/test_fuzz.py``).  Every input must end in a result or the target's clear error within
``tests/fuzz/targets.DEADLINE`` seconds; anything else is saved to ``--out/findings/``.

    python benchmarks/fuzz_run.py dockerfile --engine atheris --seconds 600   # coverage-guided
    python benchmarks/fuzz_run.py ir --engine hypothesis --examples 20000     # property-based
    python benchmarks/fuzz_run.py toml --engine atheris --seconds 300
    python benchmarks/fuzz_run.py ir-struct --seconds 600                     # edits of decoded graphs

Targets: dockerfile (parse + compile + validate the IR), ir (load_and_validate + render), toml
(read_recipe + compile + validate).  ``--out`` (default ``/tmp/irctl-fuzz/<target>``) keeps the
corpus, the findings and ``stats.json`` (inputs tried, findings, seconds).  A finding worth keeping
goes to ``tests/fuzz/regressions/<target>-<name>``, which the suite replays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ir_structure(T):
    """``ir-struct``: the fuzzer's bytes choose a valid seed graph and edits to its decoded map
    (which value, replaced by what); the edited map is re-encoded canonically with op digests fixed,
    so coverage guidance works on graph validation rather than on the framing."""
    import atheris

    seeds = [T.ir_payload(s)[1] for s in T.ir_seeds()[::2]]
    values = [None, True, False, 0, -1, 1 << 40, -(1 << 63), "", "/", "..", "../../etc", "/a/../b", "a//b", "exec",
              "bind", "cache", "secret", "ssh", "tmpfs", "insecure", "none", "host", "sha256:" + "0" * 64, b"",
              b"\x00", [], {}, [0], {"op": "sha256:" + "1" * 64}, 1.5]

    def build(data: bytes) -> bytes:
        import copy

        fdp = atheris.FuzzedDataProvider(data)
        raw = copy.deepcopy(seeds[fdp.ConsumeIntInRange(0, len(seeds) - 1)])
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            paths = T.paths_of(raw)
            path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
            choice = fdp.ConsumeIntInRange(0, len(values) + 2)
            if choice < len(values):
                raw = T.set_path(raw, path, copy.deepcopy(values[choice]))
            elif choice == len(values) and path:
                raw = T.set_path(raw, path, None, delete=True)
            else:
                raw = T.set_path(raw, path, fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)))
        try:
            return T.ir_encode(raw, redigest=fdp.ConsumeBool())
        except (TypeError, ValueError, OverflowError):
            return b""

    return build


class Recorder:
    def __init__(self, target: str, out: Path):
        from tests.fuzz import targets as T

        self.T = T
        self.fn = T.TARGETS.get(target)
        if target == "ir-struct":
            build, check = ir_structure(T), T.TARGETS["ir"]
            self.fn = lambda data: check(build(data))
        self.target = target
        self.out = out
        (out / "findings").mkdir(parents=True, exist_ok=True)
        self.tried = 0
        self.findings: dict[str, str] = {}
        self.t0 = time.monotonic()

    def __call__(self, data: bytes) -> None:
        self.tried += 1
        try:
            self.fn(data)
        except (self.T.Finding, self.T.Hang) as e:
            kind = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            name = hashlib.sha256(data).hexdigest()[:16]
            if kind not in self.findings.values():
                (self.out / "findings" / f"{self.target}-{name}").write_bytes(data)
                print(f"finding {name}: {kind}", file=sys.stderr, flush=True)
            self.findings[name] = kind
        if self.tried % 100 == 0:
            self.save()

    def save(self) -> None:
        stats = {"target": self.target, "inputs": self.tried, "seconds": round(time.monotonic() - self.t0, 1),
                 "findings": self.findings}
        (self.out / "stats.json").write_text(json.dumps(stats, indent=1))


def run_atheris(rec: Recorder, seconds: int, seeds: list[bytes]) -> None:
    import atheris

    corpus = rec.out / "corpus"
    corpus.mkdir(exist_ok=True)
    for s in seeds:
        (corpus / hashlib.sha256(s).hexdigest()[:16]).write_bytes(s)
    # import every module the target reaches, then instrument all loaded code for coverage
    for s in seeds[:5]:
        rec(s)
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-timeout=30", "-rss_limit_mb=4096",
                   "-print_final_stats=1", "-max_len=65536"], rec)
    try:
        atheris.Fuzz()
    finally:
        rec.save()


def run_hypothesis(rec: Recorder, examples: int, target: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.fuzz import test_fuzz as F

    words = {"dockerfile": F.DOCKERFILE_WORDS, "toml": F.TOML_WORDS, "ir": [b"\x00", b"\xff", b"\xc0", b"\x90"]}[target]
    strategy = F.mutated(F.seeds(target), words)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def bytes_level(data):
        rec(data)

    bytes_level()
    if target == "ir":
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def structure(data):
            seed = data.draw(st.sampled_from(F.seeds("ir")))
            _, raw = rec.T.ir_payload(seed)
            for _ in range(data.draw(st.integers(1, 4))):
                path = data.draw(st.sampled_from(rec.T.paths_of(raw)))
                raw = rec.T.set_path(raw, path, data.draw(F.VALUES)) if not path or data.draw(st.booleans()) \
                    else rec.T.set_path(raw, path, None, delete=True)
            try:
                rec(rec.T.ir_encode(raw, redigest=data.draw(st.booleans())))
            except (TypeError, ValueError, OverflowError):
                pass

        structure()
    rec.save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=["dockerfile", "ir", "ir-struct", "toml"])
    ap.add_argument("--engine", choices=["atheris", "hypothesis"], default="atheris")
    ap.add_argument("--seconds", type=int, default=300, help="atheris: run time")
    ap.add_argument("--examples", type=int, default=5000, help="hypothesis: examples per property")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path("/tmp/irctl-fuzz") / args.target
    out.mkdir(parents=True, exist_ok=True)
    rec = Recorder(args.target, out)
    from tests.fuzz import targets as T

    seeds = T.SEEDS[args.target]() if args.target in T.SEEDS else [bytes(range(64))] * 4
    try:
        if args.engine == "atheris":
            run_atheris(rec, args.seconds, seeds)
        else:
            run_hypothesis(rec, args.examples, args.target)
    finally:
        rec.save()
        print(json.dumps({"target": args.target, "engine": args.engine, "inputs": rec.tried,
                          "findings": len(rec.findings)}), file=sys.stderr)


if __name__ == "__main__":
    main()
