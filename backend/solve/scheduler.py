"""Run a DAG of tasks on threads: independent tasks concurrently, longest remaining path first.

The solver hands over one task per op (cache lookup, then maybe execution); a task becomes ready
when all its inputs are done.  Ready tasks wait in a heap ordered by the length of the longest path
from them to a target (``critical_path``), so the chain that bounds the build starts first.  How
many *execs* run at once is capped separately (``--jobs``, a semaphore in the solver), so a worker
blocked there never stops cache hits or file ops from proceeding.  On the first failure the cancel
event is set (running containers are killed by the runtime), nothing new starts, and the first
error is raised once every running task has returned.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_WORKERS = 32


def topo_order(deps: Mapping[K, Sequence[K]]) -> list[K]:
    """Dependencies before dependents (iterative DFS; the graph is already known to be acyclic)."""
    order: list[K] = []
    seen: set[K] = set()
    for start in deps:
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(deps[start]))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                order.append(node)
                stack.pop()
            elif nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, iter(deps[nxt])))
    return order


def critical_path(deps: Mapping[K, Sequence[K]], cost: Callable[[K], float]) -> dict[K, float]:
    """For each node: its cost plus the longest path of costs from it to any sink (a target)."""
    dependents: dict[K, list[K]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in ds:
            dependents[d].append(k)
    out: dict[K, float] = {}
    for k in reversed(topo_order(deps)):
        out[k] = cost(k) + max((out[d] for d in dependents[k]), default=0.0)
    return out


def run_dag(deps: Mapping[K, Sequence[K]], work: Callable[[K], None], *, priority: Mapping[K, float],
            cancel: threading.Event, workers: int = DEFAULT_WORKERS,
            consequences: tuple[type[BaseException], ...] = ()) -> None:
    """Call ``work(k)`` for every node once all of ``deps[k]`` have returned; raise the first error
    that is not one of ``consequences`` (a task's reaction to the cancellation a failure caused)."""
    remaining = {k: len(set(ds)) for k, ds in deps.items()}
    dependents: dict[K, list[K]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in set(ds):
            dependents[d].append(k)
    seq = itertools.count()
    ready: list[tuple[float, int, K]] = [(-priority.get(k, 0.0), next(seq), k) for k, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    cond = threading.Condition()
    state = {"running": 0, "done": 0}
    errors: list[BaseException] = []
    total = len(deps)

    def worker() -> None:
        while True:
            with cond:
                while not ready and not errors and state["done"] < total and not cancel.is_set():
                    if state["running"] == 0 and not ready:
                        break  # nothing can become ready any more
                    cond.wait()
                if errors or cancel.is_set() or not ready:
                    cond.notify_all()
                    return
                _, _, key = heapq.heappop(ready)
                state["running"] += 1
            try:
                work(key)
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                with cond:
                    errors.append(e)
                    cancel.set()
                    state["running"] -= 1
                    cond.notify_all()
                return
            with cond:
                state["running"] -= 1
                state["done"] += 1
                for d in dependents[key]:
                    remaining[d] -= 1
                    if remaining[d] == 0:
                        heapq.heappush(ready, (-priority.get(d, 0.0), next(seq), d))
                cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"solve-{i}", daemon=True)
               for i in range(max(1, min(workers, total)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C or SIGTERM in the caller: kill running containers, let every task clean up
        with cond:  # (not join(): before 3.12 a join() interrupted once may return early the next time)
            cancel.set()
            cond.notify_all()
            cond.wait_for(lambda: state["running"] == 0)
        raise
    if errors:
        raise _first_real(errors, consequences)
    if cancel.is_set() and state["done"] < total:
        raise KeyboardInterrupt("build cancelled")


def _first_real(errors: list[BaseException], consequences: tuple[type[BaseException], ...]) -> BaseException:
    """The error that caused the failure, not a sibling's cancellation that followed it."""
    for e in errors:
        if not isinstance(e, consequences) and not getattr(e, "cancelled", False):
            return e
    return errors[0]
