"""While ``--on-error=shell`` has the terminal, the build's other steps go on and their events wait
(``irctl.debugging.HeldProgress``).  A step of the same (hostile) build printing without end — ``RUN
yes`` beside the failed stage — must not grow irctl's memory for as long as the user sits in the shell."""

from __future__ import annotations

from backend.events import Event
from irctl import debugging


def test_output_held_during_the_shell_is_bounded_and_says_what_it_left_out():
    shown: list[Event] = []
    held = debugging.HeldProgress(shown.append)
    flood = debugging.MAX_HELD_LINES * 3
    with held.hold():
        held(Event("started", op="sha256:b", description="RUN yes"))
        for i in range(flood):
            held(Event("log", op="sha256:b", description="RUN yes", text=f"y {i}"))
        held(Event("finished", op="sha256:b", description="RUN yes"))
        assert shown == []  # nothing reaches the terminal while the shell has it
        assert len(held._held) <= debugging.MAX_HELD_LINES + 3  # what the flood costs while it lasts
    logs = [e for e in shown if e.kind == "log"]
    assert len(logs) == debugging.MAX_HELD_LINES and logs[0].text == "y 0"
    assert [e.kind for e in shown if e.kind != "log"] == ["started", "info", "finished"]
    (note,) = [e for e in shown if e.kind == "info"]
    assert f"{flood - debugging.MAX_HELD_LINES} lines of RUN yes's output" in note.text
    held(Event("log", op="sha256:b", text="after"))  # the shell gone, output flows again
    assert shown[-1].text == "after"
