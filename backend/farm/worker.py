"""``irctl worker``: a Remote Workers API bot that BuildGrid hands irctl's exec actions to.

BuildGrid schedules; the bot only keeps one bot session alive and runs what it is leased.  The
session says how many leases the bot takes at once (``worker.configs`` ``capacity`` = ``--jobs``).
Each ``UpdateBotSession`` reports every lease the bot holds (``ACTIVE`` while it runs, ``COMPLETED``
with a status and an ``ActionResult`` when it ended) and brings back new ones.  When the bot has a
free slot and nothing to report, BuildGrid holds the call open until it has work (the long poll,
at most 80% of the call's deadline and of the server's bot keepalive); while steps run, the bot
calls back on its own clock, often enough that the server never takes it for dead, and at once
when a step ends, so a result is not held back by a poll.  A bot that stops calling (a killed
worker) is dropped after the server's ``bot-session-keepalive-timeout`` and its leases re-queued;
that timeout is the whole cost of a worker dying mid-step.

Stopping: the first SIGTERM or SIGINT sets the bot ``BOT_TERMINATING`` (BuildGrid assigns it
nothing more), lets the running steps finish and report, and ends; a second one abandons them:
their containers are killed and each lease is given back as ``UNAVAILABLE``, which BuildGrid
retries on another worker.  Either way the store is left as a finished build leaves it; a worker
killed outright leaves it as a killed build does, and the next start's recovery cleans up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.rpc import code_pb2, status_pb2

from backend.errors import BackendError
from backend.farm.workerstep import Outcome, run_leased
from backend.fs import safefs
from backend.ops.mounts import secret_dir
from backend.reapi.client import RemoteError
from backend.reapi.protos import bots_pb2
from backend.runtime.container import reap_dead_build
from backend.runtime.executor import OCIExecutor
from backend.snapshot.detect import detect_snapshotter
from backend.store.cache import CacheStore, default_root

POLL_DEADLINE = 10.0  # an idle bot's long poll: BuildGrid answers within 80% of this (or of its keepalive);
# short, so a stopping idle worker is not held in a poll for long
NO_WAIT = 3.5  # a call deadline BuildGrid never long-polls under (80% of it is below its 3 s network timeout)
BUSY_TICK = 1.0  # with a step running and a slot free: how often to ask for more work
RETRY_MAX = 10.0  # backoff ceiling while the server does not answer
# what BuildGrid answers for a session it no longer has (it expired, or another took the bot's id)
SESSION_GONE = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "ABORTED"})


class WorkerError(BackendError):
    """The worker cannot start or go on (the server refused its session)."""


@dataclass
class WorkerHost:
    """The worker's machine for its whole life: its store (the layer cache and its own cache mounts),
    one store session, the snapshotter and the runtime, as a solve sets them up."""

    store: CacheStore
    work: Path
    state_dir: Path
    snapshotter: object
    executor: OCIExecutor
    exec_slots: threading.Semaphore


@contextlib.contextmanager
def open_host(cache_dir: Path | str | None, jobs: int) -> Iterator[WorkerHost]:
    store = CacheStore(default_root(cache_dir), reap_runtime_dir=reap_dead_build)
    with store.session() as work:
        state_dir = secret_dir()
        Path(f"{work}.state").write_text(str(state_dir))  # so the next start reaps it if this worker dies
        executor = OCIExecutor(state_dir, memo=store.root / "runtime.probe", scratch=work, private_network=True)
        try:
            snapshotter = detect_snapshotter(store.tmp_dir, probe_dir=work, memo=store.root / "snapshotter.probe")
            executor.warm()
            yield WorkerHost(store, work, state_dir, snapshotter, executor, threading.Semaphore(max(1, jobs)))
        finally:
            executor.close()
            safefs.rmtree(state_dir, ignore_errors=True)


@dataclass
class _Lease:
    id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    outcome: Outcome | None = None


class Worker:
    """One bot session and the leases it holds.  ``say``: one line for the worker's log (stderr)."""

    def __init__(self, remote, host: WorkerHost, *, name: str, jobs: int, say: Callable[[str], None]) -> None:
        self.remote, self.host, self.name = remote, host, name
        self.jobs = max(1, jobs)
        self.say = say
        self.stop = threading.Event()  # finish what runs, take nothing new
        self._changed = threading.Event()  # a step ended, or a signal came: call the server now
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._expires = time.time() + 10.0  # when the server takes this bot for dead without a call

    def request_stop(self) -> None:
        """First call: stop taking work; second: abandon the running steps."""
        if self.stop.is_set():
            for lease in self._running():
                lease.cancel.set()
        else:
            self.stop.set()
            if self._running():
                self.say(f"irctl worker: {self.name} finishing {len(self._running())} running step(s); "
                         "signal again to give them back to the server")
        self._changed.set()

    def serve(self, ready: Callable[[], None]) -> None:
        try:
            session = self._create()
        except RemoteError as e:  # a wrong address or a server that is down: say so now
            raise WorkerError(f"irctl worker {self.name}: cannot open a bot session: {e}") from None
        ready()
        failures = 0
        while True:
            with self._lock:
                if self.stop.is_set() and not self._leases:
                    return
            self._changed.clear()
            request, reported = self._report(session)
            started = time.monotonic()
            try:
                reply = self.remote.update_bot_session(session.name, request, timeout=self._deadline())
            except RemoteError as e:
                failures += 1
                lost = e.code in SESSION_GONE or time.time() > self._expires
                self.say(f"irctl worker: {self.name}: {e}; " + ("opening a new bot session" if lost else "retrying"))
                if lost:
                    session = self._reopen()
                    if session is None:
                        return
                    failures = 0
                else:
                    self._changed.wait(min(RETRY_MAX, 2.0 ** failures, max(0.5, (self._expires - time.time()) / 2)))
                continue
            failures = 0
            session = reply
            if reply.HasField("expire_time"):
                self._expires = reply.expire_time.ToMicroseconds() / 1e6
            self._settle(reply, reported)
            if not self._changed.is_set():
                self._pace(time.monotonic() - started if not reported else POLL_DEADLINE)

    # -- the session --------------------------------------------------------------------------
    def _create(self):
        bot = bots_pb2.BotSession(bot_id=self.name, status=bots_pb2.OK)
        bot.worker.configs.add(key="capacity", value=str(self.jobs))
        session = self.remote.create_bot_session(bot, timeout=NO_WAIT)  # ready at once; work comes with polls
        if session.HasField("expire_time"):
            self._expires = session.expire_time.ToMicroseconds() / 1e6
        return session

    def _reopen(self):
        """After the server dropped this bot (it re-queued what the bot held): the running steps are
        killed and forgotten, and a new session is opened, retried until it is (None: stopped)."""
        for lease in self._running():
            lease.cancel.set()
        self._join_all()
        failures = 0
        while not self.stop.is_set():
            try:
                return self._create()
            except RemoteError as e:
                failures += 1
                if failures == 1:
                    self.say(f"irctl worker: {self.name}: {e}; retrying")
                self._changed.wait(min(RETRY_MAX, 2.0 ** failures))
                self._changed.clear()
        return None

    def _report(self, session) -> tuple[object, set[str]]:
        """The session as the server should now see it: every lease held, the ended ones with
        their outcome; and the ids reported ended (forgotten once the server took them)."""
        request = bots_pb2.BotSession()
        request.CopyFrom(session)
        request.status = bots_pb2.BOT_TERMINATING if self.stop.is_set() else bots_pb2.OK
        del request.leases[:]
        reported = set()
        with self._lock:
            for lease in self._leases.values():
                out = request.leases.add(id=lease.id, state=bots_pb2.LeaseState.ACTIVE)
                if lease.outcome is not None:
                    out.state = bots_pb2.LeaseState.COMPLETED
                    out.status.CopyFrom(lease.outcome.status)
                    if lease.outcome.result is not None:
                        out.result.Pack(lease.outcome.result)
                    reported.add(lease.id)
        return request, reported

    def _settle(self, reply, reported: set[str]) -> None:
        """Forget what the server took, start what it leased, cancel what it took back."""
        live = (bots_pb2.LeaseState.PENDING, bots_pb2.LeaseState.ACTIVE)
        offered = {lease.id: lease for lease in reply.leases if lease.state in live}
        with self._lock:
            for lid in reported:
                self._leases.pop(lid, None)
            for lid, lease in list(self._leases.items()):
                if lid not in offered and lease.outcome is None:  # cancelled, or given to another bot
                    lease.cancel.set()
                    del self._leases[lid]
            for lid, lease in offered.items():
                if lid in self._leases:
                    continue
                mine = self._leases[lid] = _Lease(lid)
                if self.stop.is_set():  # assigned as we stopped: back to the queue at once
                    mine.outcome = Outcome(status_pb2.Status(code=code_pb2.UNAVAILABLE,
                                                             message=f"irctl worker {self.name} is stopping"), None)
                    self._changed.set()
                    continue
                threading.Thread(target=self._work, args=(mine, lease.payload), name=f"lease-{lid[-8:]}",
                                 daemon=True).start()

    def _work(self, lease: _Lease, payload) -> None:
        try:
            outcome = run_leased(self.host, self.remote, self.name, payload, lease.cancel,
                                 accepted=lambda what: self.say(f"irctl worker: {self.name}: {what}: started"))
        except Exception as e:  # noqa: BLE001 - a bug of ours: the lease fails (one line), the worker goes on
            outcome = Outcome(status_pb2.Status(code=code_pb2.UNKNOWN,
                                                message=f"irctl worker {self.name}: internal error: {e!r}"), None)
        took = time.monotonic() - lease.started
        what = outcome.description or f"lease {lease.id}"
        if outcome.status.code != code_pb2.OK:
            how = outcome.status.message.removeprefix(f"irctl worker {self.name}: ")
        else:
            how = f"exit code {outcome.result.exit_code}" if outcome.result.exit_code else "done"
        self.say(f"irctl worker: {self.name}: {what}: {how} ({took:.1f}s, {outcome.fetched / 1e6:.1f} MB of "
                 "layers fetched)")
        with self._lock:
            lease.outcome = outcome
        self._changed.set()

    # -- pacing -------------------------------------------------------------------------------
    def _running(self) -> list[_Lease]:
        with self._lock:
            return [lease for lease in self._leases.values() if lease.outcome is None]

    def _deadline(self) -> float:
        """An idle bot waits in the server for work; a busy one only reports (a deadline this short
        makes BuildGrid answer at once: it never long-polls under its network timeout)."""
        with self._lock:
            idle = not self._leases and not self.stop.is_set()
        return POLL_DEADLINE if idle else NO_WAIT

    def _pace(self, took: float) -> None:
        """Between calls: a busy bot waits for a step to end, at most ``BUSY_TICK`` with a slot free,
        else a third of what the server gives it before it is taken for dead; an idle one polls again
        at once, unless the server answered a poll without holding it (``took``: how long the poll
        was held; a call that reported a lease is answered at once, and says nothing of that)."""
        running = len(self._running())
        if not running:
            if took < 0.5:  # the server did not hold the call (a keepalive under its network timeout)
                self._changed.wait(0.5)
            return
        # (the server's clock: a skewed one is clamped, so the bot neither spins nor goes silent)
        left = min(max(self._expires - time.time(), 1.5), 90.0)
        self._changed.wait(BUSY_TICK if running < self.jobs else left / 3)

    def _join_all(self) -> None:
        while self._running():
            self._changed.wait(0.2)
            self._changed.clear()
        with self._lock:
            self._leases.clear()
