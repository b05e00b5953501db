"""The worker's bot session against a scripted server: what BuildGrid cannot easily be made to do in
a test (drop a session, take a lease back, lease a step to a stopping bot).  The steps themselves
are stand-ins (``run_leased`` replaced): the end-to-end tests run real ones."""

from __future__ import annotations

import threading
import time

import pytest
from google.rpc import code_pb2

from backend.farm import worker as worker_mod
from backend.farm.workerstep import Outcome
from backend.reapi.errors import RemoteError
from backend.reapi.protos import bots_pb2, remote_execution_pb2 as re_pb2

ACTIVE, COMPLETED = bots_pb2.LeaseState.ACTIVE, bots_pb2.LeaseState.COMPLETED


class ScriptedServer:
    """``reply(request) -> BotSession | Exception`` decides each UpdateBotSession; every request is kept."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.requests: list[bots_pb2.BotSession] = []
        self.created = 0

    def create_bot_session(self, bot, *, timeout=None):
        self.created += 1
        assert bot.bot_id == "fake" and [(c.key, c.value) for c in bot.worker.configs] == [("capacity", "1")]
        return bots_pb2.BotSession(name=f"session-{self.created}", bot_id=bot.bot_id, status=bot.status)

    def update_bot_session(self, name, bot, *, timeout=None):
        copy = bots_pb2.BotSession()
        copy.CopyFrom(bot)
        self.requests.append(copy)
        time.sleep(0.01)
        answer = self.reply(copy)
        if isinstance(answer, Exception):
            raise answer
        return answer


def lease(lid: str) -> bots_pb2.Lease:
    out = bots_pb2.Lease(id=lid, state=ACTIVE)
    out.payload.Pack(re_pb2.Action())
    return out


def echo(request, *extra: bots_pb2.Lease) -> bots_pb2.BotSession:
    """What BuildGrid answers: the request's active leases, and ``extra`` new ones."""
    out = bots_pb2.BotSession()
    out.CopyFrom(request)
    del out.leases[:]
    out.leases.extend([x for x in request.leases if x.state == ACTIVE] + list(extra))
    out.expire_time.FromNanoseconds(time.time_ns() + 1_500_000_000)  # short: a busy bot calls twice a second
    return out


@pytest.fixture
def steps(monkeypatch):
    """Each leased step blocks until the test lets it end (``release``) or it is cancelled."""
    started: dict[str, threading.Event] = {}
    release = threading.Event()

    def run_leased(host, remote, name, payload, cancel, accepted=lambda d: None):
        started[threading.current_thread().name] = cancel
        while not (release.is_set() or cancel.is_set()):
            time.sleep(0.01)
        if cancel.is_set():
            return Outcome(worker_mod.status_pb2.Status(code=code_pb2.UNAVAILABLE, message="stopped"), None, "s")
        return Outcome(worker_mod.status_pb2.Status(code=code_pb2.OK), re_pb2.ActionResult(), "s")

    monkeypatch.setattr(worker_mod, "run_leased", run_leased)
    return started, release


def serve(server) -> tuple[worker_mod.Worker, threading.Thread, list[str]]:
    said: list[str] = []
    bot = worker_mod.Worker(server, host=None, name="fake", jobs=1, say=said.append)
    thread = threading.Thread(target=bot.serve, args=(lambda: said.append("ready"),), daemon=True)
    thread.start()
    return bot, thread, said


def wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_dropped_session_kills_the_running_step_and_a_new_session_is_opened(steps):
    started, _ = steps
    dropped = threading.Event()

    def reply(request):
        if request.name == "session-1" and not request.leases and not started:
            return echo(request, lease("L1"))
        if request.name == "session-1" and started:
            dropped.set()  # the server expired the bot meanwhile
            return RemoteError("grpc://x", "UpdateBotSession: refused the request (Bot does not exist)",
                               "INVALID_ARGUMENT")
        return echo(request)

    server = ScriptedServer(reply)
    bot, thread, said = serve(server)
    wait(lambda: server.created == 2)
    assert dropped.is_set() and all(cancel.is_set() for cancel in started.values())
    wait(lambda: any(r.name == "session-2" for r in server.requests))
    assert not [r for r in server.requests if r.name == "session-2" and r.leases]  # the old lease is not reported
    assert "opening a new bot session" in said[1]
    bot.request_stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_lease_the_server_takes_back_is_killed(steps):
    started, _ = steps

    def reply(request):
        if not started:
            return echo(request, lease("L1"))
        out = echo(request)
        del out.leases[:]  # cancelled by the client, or given to another bot
        return out

    server = ScriptedServer(reply)
    bot, thread, said = serve(server)
    wait(lambda: started and all(cancel.is_set() for cancel in started.values()))
    bot.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert not any(x.state == COMPLETED for r in server.requests for x in r.leases)  # nothing to report


def test_a_stopping_bot_finishes_its_step_says_so_and_gives_back_a_lease_it_is_offered(steps):
    started, release = steps
    offered_late = []

    def reply(request):
        if not started and not request.leases:
            return echo(request, lease("L1"))
        if request.status == bots_pb2.BOT_TERMINATING and not offered_late:
            offered_late.append(True)
            return echo(request, lease("L2"))  # assigned just as the bot stopped
        return echo(request)

    server = ScriptedServer(reply)
    bot, thread, said = serve(server)
    wait(lambda: started)
    bot.request_stop()
    wait(lambda: offered_late)
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    done = {x.id: x for r in server.requests for x in r.leases if x.state == COMPLETED}
    assert done["L1"].status.code == code_pb2.OK and done["L1"].result.Is(re_pb2.ActionResult.DESCRIPTOR)
    assert done["L2"].status.code == code_pb2.UNAVAILABLE  # BuildGrid retries it elsewhere
    assert server.requests[-1].status == bots_pb2.BOT_TERMINATING
    assert len(started) == 1  # L2 never ran
    assert "fake finishing 1 running step(s)" in said[1]

