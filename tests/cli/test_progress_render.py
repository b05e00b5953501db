"""The progress renderers on a fixed stream and width: BuildKit's plain elapsed times, tty lines
cut to the terminal (labels and times kept), a failure said once, pull sizes that no registry can
make unreadable, and a pull meter that does not flood the renderer."""

from __future__ import annotations

import io

import pytest

from backend.events import Event, Meter, MeteredReader, Recorder
from irctl.progress import byte_count, fit, human_size, renderer

OP = "sha256:" + "a" * 64
FROM = "sha256:" + "f" * 64
LONG = "[stage-1 3/4] RUN echo " + "lorem ipsum dolor sit amet " * 8


def ev(kind, op=OP, description=LONG, text="", mono=100.0, **kw) -> Event:
    return Event(kind, op, description, "stage-1", text, mono=mono, **kw)


@pytest.mark.parametrize("n,want", [(0, "0B"), (999, "999B"), (1_036_000, "1.036MB"), (48_770_000, "48.77MB"),
                                    (10**18, "1EB"), (2**63 - 1, "9.223EB"), (10**30, ">999EB"), (-5, "?")])
def test_sizes_are_short_whatever_a_registry_claims(n, want):
    assert human_size(n) == want


def test_a_total_below_the_count_or_unknown_shows_the_count_alone():
    assert byte_count(5_000_000, 10_000_000) == "5MB / 10MB"
    assert byte_count(5_000_000, 1000) == "5MB"  # a lying (small) size
    assert byte_count(5_000_000, 0) == "5MB"


def test_meter_sends_the_first_and_the_last_and_at_most_one_per_interval():
    rec = Recorder()
    meter = Meter(rec, (FROM, "[1/2] FROM x", ""), "sha256:" + "b" * 64, 10**30, interval=60.0)
    for i in range(1, 10_001):
        meter(i * 100)
    meter.finish()
    got = rec.of("progress")
    assert [(e.current, e.total, e.done) for e in got] == [(100, 0, False), (1_000_000, 0, True)]
    assert {e.op for e in got} == {FROM}
    assert Meter(rec, (FROM, "", ""), "x", -1).total == 0
    assert Meter(rec, (FROM, "", ""), "x", "12").total == 0  # type: ignore[arg-type]


def test_metered_reader_counts_what_was_read():
    rec = Recorder()
    meter = Meter(rec, (FROM, "", ""), "extracting x", 10, interval=0.0)
    r = MeteredReader(io.BytesIO(b"0123456789"), meter)
    assert r.read(4) + r.read() == b"0123456789"
    assert [e.current for e in rec.of("progress")] == [4, 10]


def test_plain_lines_carry_the_seconds_since_their_step_started():
    out = io.StringIO()
    p = renderer("plain", out)
    p(ev("started", mono=100.0))
    p(ev("log", text="hello", mono=100.512))
    p(ev("log", text="\x1b[2Jworld", mono=101.25))
    p(ev("finished", duration=1.3, mono=101.3))
    p.close()
    assert out.getvalue() == (f"#1 {LONG}\n#1 0.512 hello\n#1 1.250 \\x1b[2Jworld\n#1 DONE 1.3s\n")


def test_plain_pull_progress_is_two_lines_per_item_and_names_the_from_step():
    out = io.StringIO()
    p = renderer("plain", out)
    p(Event("finished", FROM, "[1/2] FROM x", "", "resolved", 0.01))
    blob = "sha256:" + "b" * 64
    for cur in (0, 1_000_000, 2_000_000):
        p(Event("progress", FROM, "[1/2] FROM x", "", blob, cur / 1e6, current=cur, total=2_000_000))
    p(Event("progress", FROM, "[1/2] FROM x", "", blob, 2.0, current=2_000_000, total=2_000_000, done=True))
    p(Event("progress", FROM, "[1/2] FROM x", "", "extracting " + blob, 0.0, current=0, total=2_000_000))
    p(Event("progress", FROM, "[1/2] FROM x", "", "extracting " + blob, 0.5, current=2_000_000, total=2_000_000,
            done=True))
    assert out.getvalue().splitlines() == [
        "#1 [1/2] FROM x", "#1 DONE 0.0s",
        f"#1 {blob} 0B / 2MB", f"#1 {blob} 2MB / 2MB 2.0s done",
        f"#1 extracting {blob} 0B / 2MB", f"#1 extracting {blob} 2MB / 2MB 0.5s done"]


@pytest.mark.parametrize("mode", ["plain", "tty", "quiet"])
def test_a_claimed_failure_is_not_printed_and_an_unclaimed_one_is_once(mode):
    out = io.StringIO()
    p = renderer(mode, out, width=80)
    p(ev("started"))
    p(ev("failed", text="process '/bin/sh -c false' did not complete successfully: exit code 1", duration=0.2))
    other = "sha256:" + "c" * 64
    p(ev("started", op=other, description="[2/3] RUN exit 3"))
    p(ev("failed", op=other, description="[2/3] RUN exit 3", text="exit code 3", duration=0.1))
    p.claim(OP)
    p.close()
    text = out.getvalue()
    assert "exit code 1" not in text, text
    assert text.count("exit code 3") == 1, text


def _tty_lines(width: int, events) -> tuple[list[str], list[str]]:
    """(the lines a tty renderer printed, the lines of its live view at the end) at ``width``."""
    from rich.console import Console

    out = io.StringIO()
    p = renderer("tty", out, width=width)
    for e in events:
        p(e)
    live = io.StringIO()
    Console(file=live, width=width).print(p._render())
    p.close()
    return out.getvalue().splitlines(), live.getvalue().splitlines()


def test_tty_lines_are_cut_to_the_width_keeping_the_label_and_the_time():
    blob = "sha256:" + "b" * 64
    printed, live = _tty_lines(60, [
        ev("cached", op=FROM, description="[build 1/2] FROM 127.0.0.1:5000/debian:bookworm@sha256:" + "e" * 64),
        ev("started", op="sha256:" + "1" * 64, description="[build 2/2] RUN make"),
        ev("finished", op="sha256:" + "1" * 64, description="[build 2/2] RUN make", duration=12.25),
        ev("started"),
        ev("log", text="x" * 300),
        Event("progress", FROM, "[build 1/2] FROM x", "", blob, 0.3, current=10**7, total=10**18),
        Event("progress", FROM, "[build 1/2] FROM x", "", "extracting " + blob, 1.5, current=2 * 10**6,
              total=2 * 10**6, done=True),
    ])
    for line in printed + live:
        assert len(line) <= 60, line
    assert printed[0].startswith(" => CACHED #1 [build 1/2] FROM 127.0.0.1:5000/debian:") and printed[0].endswith("…")
    assert printed[1] == " => #2 [build 2/2] RUN make 12.2s"
    assert printed[2] == f" => #1 extracting {blob[:19]} 2MB / 2MB 1.5s"
    running = [line for line in live if line.startswith(" => #3 ")]
    assert running and running[0].startswith(" => #3 [stage-1 3/4] RUN echo lorem") and running[0].endswith("s")
    assert any(line.startswith(f" => #1 {blob[:19]} 10MB / 1EB ") for line in live), live
    assert any(line.startswith("    xxxx") and len(line) == 60 for line in live), live


def test_fit_keeps_prefix_and_suffix():
    assert fit(" => ", "[a 1/2] RUN " + "y" * 50, "3.0s", 30) == " => [a 1/2] RUN yyyyyyyy… 3.0s"
    assert len(fit(" => ", "n" * 100, "", 30)) == 30
    assert fit(" => ", "short", "1.0s", 30) == " => short 1.0s"
    wide = fit(" => ", "[a 1/2] RUN echo " + "漢字" * 20, "3.0s", 30)  # two cells each
    assert wide.endswith("… 3.0s") and wide.startswith(" => [a 1/2] RUN echo 漢")
    from rich.cells import cell_len

    assert cell_len(wide) <= 30


def test_json_progress_events_carry_the_byte_counts():
    import json

    out = io.StringIO()
    p = renderer("json", out)
    p(Event("progress", FROM, "[1/2] FROM x", "", "sha256:" + "b" * 64, 0.25, current=5, total=10))
    p(ev("log", text="hi"))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["kind"], first["current"], first["total"], first["done"]) == ("progress", 5, 10, False)
    assert "current" not in second  # other kinds keep their shape


def test_a_step_a_build_farm_ran_names_its_worker_and_a_resolved_source_names_nothing():
    out = io.StringIO()
    p = renderer("plain", out)
    p(Event("finished", FROM, "[1/2] FROM x", "", "resolved", 0.01))
    p(ev("started"))
    p(ev("finished", text="on worker-1\x1b[2J", duration=2.14, mono=102.1))
    p.close()
    assert out.getvalue().splitlines() == ["#1 [1/2] FROM x", "#1 DONE 0.0s", f"#2 {LONG}",
                                           "#2 DONE 2.1s on worker-1\\x1b[2J"]
    printed, _ = _tty_lines(80, [ev("started", description="[2/2] RUN make"),
                                 ev("finished", description="[2/2] RUN make", text="on worker-1", duration=2.14)])
    assert printed == [" => #1 [2/2] RUN make 2.1s on worker-1"]
