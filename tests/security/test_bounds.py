"""Hostile input costs bounded memory and time, and ends in a located error, never a traceback.

* IR files: no file under 1 MiB makes ``irctl validate``/``dump``/``solve`` exceed 256 MiB of RSS
  (``ir.limits``); each hostile file (``hostile_ir.cases``) is run through the real CLI in its own
  process, whose peak RSS ``os.wait4`` reports, under an address-space limit as a backstop.
* Step output: the redaction and the output tail handle 64 MiB without a newline, or in very long
  lines, in linear time and bounded memory (``backend.events``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.security import hostile_ir
from tests.security.measure import MIB, run_measured
from tests.support.cli import irctl, irctl_argv

RSS_LIMIT = 256 * MIB


CASES = hostile_ir.cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_ir_file_costs_bounded_memory(name: str, tmp_path: Path) -> None:
    data = CASES[name]
    assert len(data) < MIB
    path = tmp_path / f"{name}.irg"
    path.write_bytes(data)
    code, out, err, rss = run_measured(irctl_argv("validate", path))
    text = err.decode()
    print(f"{name}: {len(data)} bytes, peak RSS {rss / MIB:.0f} MiB: {text.strip()[:160]}")
    assert "Traceback" not in text and "MemoryError" not in text
    assert code == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), text
    assert rss < RSS_LIMIT, f"{name}: peak RSS {rss / MIB:.0f} MiB"


@pytest.mark.parametrize("name", ["at-budget-args", "rle-bomb-args", "roots-map-zstd", "deep-maps"])
@pytest.mark.parametrize("command", ["dump", "solve", "dump --format json"])
def test_other_readers_of_ir_files_are_bounded_too(name: str, command: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.irg"
    path.write_bytes(CASES[name])
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err, rss = run_measured(irctl_argv(*command.split(), path), env=env)
    assert "Traceback" not in err.decode()
    assert code == 2 and len(err.decode().strip().splitlines()) == 1, err
    assert rss < RSS_LIMIT, f"{command} {name}: peak RSS {rss / MIB:.0f} MiB"


def test_standard_input_is_bounded_too() -> None:
    code, out, err, rss = run_measured(irctl_argv("validate", "-"), stdin=CASES["rle-bomb-empty-lists"])
    assert code == 2 and b"over the limit" in err and rss < RSS_LIMIT


def test_a_large_legitimate_graph_under_1_mib_is_accepted(tmp_path: Path) -> None:
    """The limits leave room: a 4,000-op graph with metadata (~0.4 MiB compressed) validates,
    dumps and stays far under the limit."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_ir import make_graph

    from ir.codec import dump_document

    data = dump_document(make_graph(4000))
    assert len(data) < MIB
    path = tmp_path / "big.irg"
    path.write_bytes(data)
    for command in ("validate", "dump"):
        code, out, err, rss = run_measured(irctl_argv(command, path))
        assert code == 0, err
        assert rss < RSS_LIMIT / 2, f"{command}: {rss / MIB:.0f} MiB"


def test_limits_are_relative_to_the_file() -> None:
    """The ratio and budget grow with the file, so big legitimate graphs are not refused."""
    from ir import limits

    assert limits.allowed_payload(100) == limits.MIN_PAYLOAD_ALLOWANCE
    assert limits.allowed_payload(10 * MIB) == limits.MAX_RATIO * 10 * MIB
    assert limits.allowed_payload(1 << 30) == limits.MAX_PAYLOAD
    assert limits.budget(1000) == limits.MIN_BUDGET
    assert limits.budget(100 * MIB) == limits.BUDGET_PER_BYTE * 100 * MIB


# ------------------------------------------------------------------------------- step output

def _output_dockerfile(mib: int) -> str:
    n = mib << 20
    return (f"FROM busybox\n"
            f"RUN head -c {n} /dev/zero | tr '\\0' x; echo\n"  # one line of N bytes
            f"RUN yes $(head -c 200000 /dev/zero | tr '\\0' a) | head -c {n}\n")  # 200 KB lines


@pytest.mark.e2e
def test_step_output_costs_linear_time_and_bounded_memory(tmp_path: Path, busybox_layout: Path) -> None:
    """Main took 1 s for 8 MiB without a newline and 12 s for 32 MiB (quadratic); now 4 times
    the output takes about 4 times as long, and memory does not grow with the line."""
    times, rss = {}, {}
    for mib in (16, 64):
        ctx = tmp_path / f"ctx{mib}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(_output_dockerfile(mib))
        env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
        t0 = time.monotonic()
        code, out, err, rss[mib] = run_measured(
            irctl_argv("build", ctx, "--build-context", f"busybox=oci-layout://{busybox_layout}:latest",
                       "--progress=plain", "--no-cache"), env=env, timeout=300)
        times[mib] = time.monotonic() - t0
        assert code == 0, err[-2000:]
        lines = err.decode().splitlines()
        cut = [line for line in lines if "more bytes of this line not shown" in line]
        assert len(cut) >= 2 and all(len(line) < 70 * 1024 for line in lines)
    print(f"output 16 MiB: {times[16]:.2f}s {rss[16] / MIB:.0f} MiB; 64 MiB: {times[64]:.2f}s {rss[64] / MIB:.0f} MiB")
    assert times[64] < 8 * times[16] + 2, times  # quadratic would be 16 times
    assert rss[64] < rss[16] + 32 * MIB, rss


def test_lines_cut_long_lines_and_never_show_part_of_a_secret() -> None:
    from backend.output import MAX_LINE, Lines, Redactor

    secret = b"S3CRET-" + b"v" * 40
    got: list[str] = []
    lines = Lines(got.append, Redactor([secret]))
    # a secret straddling the cut, one after it, and one split across chunks
    data = b"a" * (MAX_LINE - 10) + secret + b"b" * 100 + secret + b"\n" + b"x" * 5 + secret[:9]
    for i in range(0, len(data), 7):
        lines(data[i:i + 7])
    lines(secret[9:] + b"\n" + b"tail")
    lines.flush()
    assert got[0].startswith("a" * (MAX_LINE - 10) + "****") and "S3CRET" not in got[0]
    assert got[0].endswith("more bytes of this line not shown]")
    assert got[1] == "xxxxx****" and got[2] == "tail"
    assert len(lines.tail) == 3


def test_lines_time_is_linear_in_the_output() -> None:
    from backend.output import Lines, Redactor

    def run(mib: int, pattern: bytes) -> float:
        lines = Lines(lambda text: None, Redactor([b"a-secret-value", b"another one"]))
        chunk = (pattern * (65536 // len(pattern) + 1))[:65536]
        t0 = time.perf_counter()
        for _ in range(mib * 16):
            lines(chunk)
        lines.flush()
        return time.perf_counter() - t0

    for pattern in (b"x", b"y" * 300_000 + b"\n", b"z" * 1000 + b"\n"):
        t8, t32 = min(run(8, pattern) for _ in range(2)), min(run(32, pattern) for _ in range(2))
        assert t32 < 8 * t8 + 0.05, (pattern[:4], t8, t32)


@pytest.mark.parametrize("command", ["validate", "dump", "solve"])
def test_a_huge_sparse_ir_file_is_refused_before_reading(command: str, tmp_path: Path) -> None:
    path = tmp_path / "huge.irg"
    with open(path, "wb") as f:
        f.write(hostile_ir.frame(b"\x80", compress=False))
        f.truncate(8 << 30)
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err, rss = run_measured(irctl_argv(command, path), env=env)
    assert code == 2 and b"larger than" in err and b"Traceback" not in err, err
    assert rss < 100 * MIB


def test_lines_never_show_a_secret_however_the_output_is_chunked() -> None:
    """Property: whatever the chunking and wherever values, parts of values and long runs fall,
    no emitted line holds a value, and a line under the limit is its input with values masked."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from backend.output import MAX_LINE, Lines, Redactor

    secrets = [b"tok-1234567890", b"pem line abcdefgh\nsecond line ijklmnop\n", b"  padded-value  "]
    redactor = Redactor(secrets)
    pieces = st.sampled_from([b"tok-1234567890", b"tok-12345", b"67890", b"pem line abcdefgh", b"second line ijklmnop",
                              b"padded-value", b"\n", b"x", b"y" * 1000, b"z" * (MAX_LINE - 5)])

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.lists(pieces, max_size=40), st.lists(st.integers(1, 70_000), min_size=1, max_size=20))
    def check(parts, cuts):
        data = b"".join(parts)
        got: list[str] = []
        lines = Lines(got.append, redactor)
        pos = 0
        for n in cuts * (len(data) // max(1, sum(cuts)) + 1):
            if pos >= len(data):
                break
            lines(data[pos:pos + n])
            pos += n
        lines.flush()
        for text in got:
            for form in redactor.forms:
                assert form.decode() not in text
        expected = [line for line in data.split(b"\n")]
        if expected and expected[-1] == b"":
            expected.pop()
        assert len(got) == len(expected)
        for text, line in zip(got, expected):
            if len(line) <= MAX_LINE:
                assert text == redactor.bytes(line).decode()

    check()


def test_graph_checks_and_rendering_are_linear_on_a_lattice(tmp_path: Path) -> None:
    """A lattice of merges has 2^300 paths from root to base: every reader (checks, listing, dot,
    diff, the scheduler's critical path) must visit each op once."""
    from backend.solve.scheduler import critical_path
    from ir import builder as b
    from ir.codec import dump_document

    base = b.image("busybox", digest="sha256:" + "ab" * 32)
    x, y = base.mkfile("/a", b"1"), base.mkfile("/b", b"2")
    for i in range(300):
        x, y = x.merge([y]).mkfile(f"/x{i}", b"x"), y.merge([x]).mkfile(f"/y{i}", b"y")
    doc = b.build_document({"default": x.merge([y])})
    path = tmp_path / "lattice.irg"
    path.write_bytes(dump_document(doc))
    for command in (["validate"], ["dump"], ["dump", "--format", "dot"], ["dump", "--diff", path]):
        t0 = time.monotonic()
        code, out, err, rss = run_measured(irctl_argv(*command, path), timeout=60)
        assert code in (0,) and time.monotonic() - t0 < 20, (command, err)
    deps = {d: sorted({r.op for r in op.inputs}) for d, op in doc.ops.items()}
    t0 = time.monotonic()
    critical_path(deps, lambda d: 1.0)
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("command", ["validate", "dump", "dump --format json", "dump --format dot"])
def test_a_valid_graph_near_the_budget_is_read_and_rendered_within_the_limit(command: str, tmp_path: Path) -> None:
    from ir import codec, limits

    data = hostile_ir.valid_near_budget()
    assert len(data) < MIB and limits.estimate(codec.unframe(data)) > limits.MIN_BUDGET * 0.8
    path = tmp_path / "big.irg"
    path.write_bytes(data)
    code, out, err, rss = run_measured(irctl_argv(*command.split(), path))
    assert code == 0, err
    print(f"{command}: peak RSS {rss / MIB:.0f} MiB")
    assert rss < RSS_LIMIT, f"{command}: {rss / MIB:.0f} MiB"


HOSTILE_PATTERNS = ["*a" * 12 + "*b", "**/" + "*a" * 10 + "*b", "a*a*a*a*a*a*a*a*[!x]", "*?" * 10 + "*/x"]


@pytest.mark.parametrize("pattern", HOSTILE_PATTERNS)
def test_a_hostile_ignore_pattern_costs_linear_time(tmp_path: Path, pattern: str) -> None:
    """A .dockerignore line with many stars against a long name: Python's backtracking regex took
    n**k steps — ``*a*a*a*a*a*a*a*a*a*a*a*a*b`` and a 200-character name ran for more than ten
    minutes and ignored SIGTERM (found by the review after issue 11).  Through the real CLI."""

    ctx = tmp_path / "ctx"
    (ctx / ("a" * 200)).mkdir(parents=True)
    (ctx / ("a" * 200) / ("a" * 200)).write_text("x")
    (ctx / ".dockerignore").write_text(pattern + "\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    t = time.monotonic()
    r = irctl("build", "--progress", "plain", "--cache-dir", tmp_path / "cache", ctx, timeout=60)
    assert r.code == 0, r.stderr
    assert time.monotonic() - t < 20


def test_the_automaton_agrees_with_the_regex() -> None:
    """Where the ignore matcher simulates a pattern's automaton (many stars), it gives the regex's
    answer: random patterns over the pattern language, random paths."""
    import random
    import warnings

    from ir.patterns import PatternError, _atoms, _nfa_match, compile_pattern

    rng = random.Random(11)
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(20000):
            p = "".join(rng.choice("ab/*?.[]^-\\!") for _ in range(rng.randint(1, 10)))
            try:
                rx = compile_pattern(p)
            except PatternError:
                continue
            atoms = _atoms(rx.pattern)
            if atoms is None:
                continue
            for _ in range(8):
                t = "".join(rng.choice("ab/.[]^-*?\\!") for _ in range(rng.randint(0, 8)))
                assert bool(rx.match(t)) == _nfa_match(atoms, t), (p, rx.pattern, t)
                checked += 1
    assert checked > 50000


def test_a_hostile_copy_wildcard_costs_linear_time(tmp_path: Path) -> None:
    """The same backtracking through ``COPY *a*a…*b`` (Go's ``filepath.Match`` rules) against a
    200-character name in the context (found by the review after issue 11)."""

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / ("a" * 200)).write_text("x")
    (ctx / ("a" * 20 + "b")).write_text("y")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY " + "*a" * 12 + "*b /x/\n")
    t = time.monotonic()
    r = irctl("build", "--progress", "plain", "--cache-dir", tmp_path / "cache", "-o",
              f"type=local,dest={tmp_path / 'out'}", ctx, timeout=60)
    assert r.code == 0, r.stderr
    assert time.monotonic() - t < 20
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["a" * 20 + "b"]


@pytest.mark.parametrize("modifier", ["/*a*a*a*a*a*a*a*a*a*a*b/x", "//*a*a*a*a*a*a*a*a*a*a*b/x", "#*a*a*a*a*a*a*a*a*a*a*b",
                                      "##*a*a*a*a*a*a*a*a*a*a*b", "%a*a*a*a*a*a*a*a*a*a*b*", "%%a*a*a*a*a*a*a*a*a*a*b*"])
def test_a_hostile_substitution_pattern_costs_linear_time(tmp_path: Path, modifier: str) -> None:
    """``${V/pattern/x}``, ``${V#pattern}``, ``${V%pattern}`` with many stars on a long value: the
    compile runs on the host, and a backtracking regex did not finish (found by the review after
    issue 11). Through the real CLI, on a value 100 times longer than the one that hung."""

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM scratch\nARG V={'a' * 30000}\nENV X=${{V{modifier}}}\n")
    t = time.monotonic()
    r = irctl("compile", ctx, "-o", tmp_path / "g.ir", timeout=120)
    assert r.code == 0, r.stderr
    assert time.monotonic() - t < 30


def test_looking_for_a_many_line_secret_in_a_layer_is_not_an_alternation() -> None:
    """A PEM value has one form per line (~50): ``secretscan`` looks for all of them in every file a
    step wrote.  A regex alternation tries each form at each position; substring searches skip
    ahead.  Timed against that alternation on the same data (so the machine's load cancels out),
    and the answers must agree (found anywhere, found nowhere, found only at the very end)."""
    import random
    import re

    from backend.output import Redactor

    rng = random.Random(12)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pem = b"-----BEGIN PRIVATE KEY-----\n" + b"".join(
        bytes(rng.choice(alphabet) for _ in range(64)) + b"\n" for _ in range(50)) + b"-----END PRIVATE KEY-----\n"
    redactor = Redactor([pem])
    alternation = re.compile(b"|".join(map(re.escape, redactor.forms)))
    text = bytes(rng.choice(alphabet + b"\n -") for _ in range(1 << 16)) * 64  # 4 MiB, no form in it
    for data in (text, text + pem.splitlines()[7], pem.splitlines()[30] + text):
        assert redactor.found_in(data) == (alternation.search(data) is not None)
    assert not redactor.found_in(text)

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(text)
            times.append(time.perf_counter() - t0)
        return min(times)

    ours, regex = best(redactor.found_in), best(alternation.search)
    assert ours < 0.5 * regex, (ours, regex)


def test_pem_armor_lines_are_not_secret_forms(tmp_path: Path) -> None:
    """A PEM secret (a CA bundle, a key) is found and masked by its own lines, not by the
    ``-----BEGIN …-----`` lines every PEM file has: a step that installs Debian's ca-certificates
    wrote 148 files that were each reported as holding the build's secret."""
    from backend.ops import secretscan
    from backend.output import Redactor

    secret = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUSecretLineOne\nMIIBszCCAVmgAwIBAgIUSecretLineTwo\n" \
             b"-----END CERTIFICATE-----\n"
    other = b"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkq\n-----END CERTIFICATE-----\n"
    redactor = Redactor([secret])
    (tmp_path / "other.crt").write_bytes(other)
    (tmp_path / "copy.pem").write_bytes(b"x\n" + secret.splitlines()[2] + b"\n")
    assert secretscan.find(redactor, tmp_path) == ["copy.pem"]
    assert redactor.bytes(other) == other
    assert redactor.bytes(secret).count(b"****") == 1 and b"SecretLine" not in redactor.bytes(secret)
    assert b"SecretLineOne" not in redactor.bytes(b"printed: MIIBszCCAVmgAwIBAgIUSecretLineOne")
