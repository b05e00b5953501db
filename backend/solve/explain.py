"""Why a step missed the cache, in words, from two build records (``backend.solve.buildrecord``).

Each step that ran this build is paired with the step that stood in its place in the previous build
of the same target, then their keys' parts are compared one by one: the op's own bytes (and, for a
RUN, which of its command, environment, user, working dir and mounts changed), the options beside
it, and what each input contributed — a base image's digest, the files of the build context or of
another stage that the step selects (named, from the listings kept for each selection), or the
result of the step that produced it.

Pairing, most certain first: the same op digest (the same op on the same inputs); the same stage
and instruction text (the ``[stage n/m]`` counter left out, so inserting a step moves nothing); then
along the graph: when two steps are paired, the steps producing their inputs at the same index are
paired too, and so are the steps taking them at the same input, which finds a step whose text
changed (an edited RUN, a FROM with a new digest).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

MAX_FILES = 5  # changed paths named per input; the rest are counted
MAX_ENV = 5


@dataclass(frozen=True)
class Explanation:
    description: str
    reasons: tuple[str, ...]


def explain(record) -> list[Explanation]:
    """One explanation per step that ran in ``record`` (a ``BuildRecord`` after a solve)."""
    cur: dict[str, dict] = record.steps
    # (an image op only attaches the config: it "runs" whenever its input changed, which says nothing new)
    ran = [(d, e) for d, e in cur.items() if e.get("status") == "ran" and e.get("kind") != "image"]
    if not ran:
        return []
    if record.no_cache:
        return [Explanation(e["desc"], ("--no-cache: every step runs again",)) for _, e in ran]
    if record.previous is None:
        return [Explanation(e["desc"], ("first build of this target: no earlier successful build to compare with",))
                for _, e in ran]
    prev: dict[str, dict] = record.previous["steps"]
    pairs = match_steps(cur, prev)
    given = record.previous.get("build_args")
    args = set(record.build_args) | set(given if isinstance(given, list) else ())  # --build-arg names
    out = []
    for d, e in ran:
        p = pairs.get(d)
        if e.get("group") in record.no_cache_groups:
            why = [f"--no-cache-filter: the steps of {e['group']} run again"]
        elif not e.get("key"):
            why = ["it is never cached: what it fetches is pinned by no checksum or commit"]
        elif p is None:
            why = ["a new step: nothing stood in its place in the previous build"]
        else:
            why = _reasons(e, prev[p], cur, prev, record, args)
        out.append(Explanation(e["desc"], tuple(why)))
    return out


def header(record, count: int) -> str:
    prev = record.previous
    when = ""
    if prev is not None and not record.no_cache and isinstance(prev.get("time"), (int, float)):
        when = f", compared with its build of {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(prev['time']))}"
    steps = "1 step" if count == 1 else f"{count} steps"
    return f"why {steps} of {record.label} ran{when}:"


def format_text(record, explanations: list[Explanation]) -> list[str]:
    if not explanations:
        return ["explain: every step was cached"]
    lines = [header(record, len(explanations))]
    for x in explanations:
        lines.append(f" => {x.description}")
        lines += [f"      {r}" for r in x.reasons]
    return lines


# ------------------------------------------------------------------------------------------- pairing


def _label(entry: dict) -> tuple[str, str]:
    if entry.get("kind") == "base":
        return entry.get("group", ""), "base " + str(entry.get("detail", {}).get("ref", ""))
    return entry.get("group", ""), re.sub(r"^\[[^\]]*\]\s*", "", entry.get("desc", ""))


def match_steps(cur: dict[str, dict], prev: dict[str, dict]) -> dict[str, str]:
    """current op digest -> previous op digest (see the module doc)."""
    pairs: dict[str, str] = {d: d for d in cur if d in prev}
    used = set(pairs.values())
    by_label: dict[tuple[str, str], list[str]] = {}
    for d, e in prev.items():
        if d not in used:
            by_label.setdefault(_label(e), []).append(d)
    for d, e in cur.items():
        if d not in pairs and by_label.get(_label(e)):
            p = by_label[_label(e)].pop(0)
            pairs[d] = p
            used.add(p)
    cons, pcons = _consumers(cur), _consumers(prev)
    todo = list(pairs.items())
    while todo:
        d, p = todo.pop()
        near = [(c[0], q[0]) for c, q in zip(cur[d].get("inputs", ()), prev[p].get("inputs", ()))]
        for key, users in cons.get(d, {}).items():  # and the steps that take them at the same input
            if len(users) == 1 and len(pcons.get(p, {}).get(key, ())) == 1:
                near.append((users[0], pcons[p][key][0]))
        for c, q in near:
            if c in cur and q in prev and c not in pairs and q not in used \
                    and cur[c].get("kind") == prev[q].get("kind"):
                pairs[c] = q
                used.add(q)
                todo.append((c, q))
    return pairs


def _consumers(steps: dict[str, dict]) -> dict[str, dict[tuple[int, int], list[str]]]:
    """producer -> (its output, input index) -> the steps taking it there."""
    out: dict[str, dict[tuple[int, int], list[str]]] = {}
    for d, e in steps.items():
        for i, (producer, output, _) in enumerate(e.get("inputs", ())):
            out.setdefault(producer, {}).setdefault((output, i), []).append(d)
    return out


# ------------------------------------------------------------------------------------------- reasons


def _reasons(c: dict, p: dict, cur: dict, prev: dict, record, args: set) -> list[str]:
    if c.get("key") and c.get("key") == p.get("key"):
        return ["its result from the previous build is no longer in the cache (pruned)"]
    if c.get("kind") != p.get("kind"):
        return [f"the instruction changed (was: {p.get('desc', '?')})"]
    out: list[str] = []
    if c.get("body") != p.get("body"):
        out += _body_changes(c, p, args)
    if c.get("extra") != p.get("extra"):
        out.append("the --network option changed" if c.get("kind") == "exec" else "how it is fetched changed")
    for ci, pi in zip(c.get("inputs", ()), p.get("inputs", ())):
        if ci[2] != pi[2]:
            out.append(_input_change(ci, pi, cur, prev, record))
    return out or ["its cache key changed"]


def _was(c: dict, p: dict) -> str:
    return f" (was: {p.get('desc', '?')})" if _label(c) != _label(p) else ""


def _body_changes(c: dict, p: dict, args: set) -> list[str]:
    cd, pd = c.get("detail") or {}, p.get("detail") or {}
    if c.get("kind") != "exec":
        return [f"the instruction changed{_was(c, p)}"]
    out = []
    if cd.get("args") != pd.get("args"):
        out.append(f"the command changed{_was(c, p)}")
    cenv, penv = cd.get("env") or {}, pd.get("env") or {}
    env = []
    for k in sorted(set(cenv) | set(penv)):
        what = f"the build arg {k}" if k in args else k  # given with --build-arg (this time or the last)
        where = "" if k in args else " (ENV or build arg)"
        if k not in penv:
            env.append(f"{what} is now set{where}")
        elif k not in cenv:
            env.append(f"{what} is no longer set{where}")
        elif cenv[k] != penv[k]:
            env.append(f"the value of {what} changed{where}")
    out += env[:MAX_ENV] + ([f"and {len(env) - MAX_ENV} more variables changed"] if len(env) > MAX_ENV else [])
    for field, words in (("user", "USER changed"), ("cwd", "WORKDIR changed"),
                         ("mounts", "its --mount options changed"),
                         ("other", "its RUN options changed (network, security, hostname, --add-host, "
                                   "--shm-size or --ulimit)")):
        if cd.get(field) != pd.get(field):
            out.append(words)
    return out or [f"the instruction changed{_was(c, p)}"]


def _short(digest: str) -> str:
    return digest.rpartition(":")[2][:12] or "?"


def _input_change(ci: list, pi: list, cur: dict, prev: dict, record) -> str:
    cprod, pprod = cur.get(ci[0]) or {}, prev.get(pi[0]) or {}
    kind = cprod.get("kind")
    if kind == "base":
        cref, pref = cprod.get("detail", {}).get("ref", "?"), pprod.get("detail", {}).get("ref", "?")
        if cref != pref:
            return f"the base image changed: {pref} -> {cref}"
        digests = f"digest {_short((pprod.get('out') or ['?'])[0])} -> {_short((cprod.get('out') or ['?'])[0])}"
        if ci[2].startswith("selection:"):
            files = _file_changes(ci[2], pi[2], record, absolute=True)
            return f"files it reads from the image {cref} ({digests}) changed" + (f": {files}" if files else "")
        return f"the base image {cref} changed: {digests}"
    files = _file_changes(ci[2], pi[2], record, absolute=kind != "local")
    if kind == "local":
        if files:
            return f"build context files it reads changed: {files}"
        return "files it reads from the build context changed"
    name = cprod.get("desc", "an earlier step")
    if files:
        return f"files it reads from {name} changed: {files}"
    again = "re-ran and " if cprod.get("status") == "ran" else ""
    return f"{name} {again}produced different files"


def _file_changes(cpart: str, ppart: str, record, absolute: bool) -> str:
    """``a (changed), b (added), +3 more`` between two contributions, or '' when not known."""
    csel, psel = cpart.startswith("selection:"), ppart.startswith("selection:")
    if csel != psel:
        return ""
    cds = cpart.removeprefix("selection:").split(",")
    pds = ppart.removeprefix("selection:").split(",")
    if len(cds) != len(pds):
        return ""
    changes: dict[str, str] = {}
    for cd, pd in zip(cds, pds):
        if cd == pd:
            continue
        if cd.startswith("missing:") or pd.startswith("missing:"):
            return "the path it names " + ("is missing now" if cd.startswith("missing:") else "exists now")
        new, old = record.listing(cd), record.listing(pd)
        if new is None or old is None:
            return ""
        for path in new.keys() | old.keys():
            if path not in old:
                changes.setdefault(path, "added")
            elif path not in new:
                changes.setdefault(path, "removed")
            elif new[path] != old[path]:
                changes.setdefault(path, "changed")
    if not changes:
        return ""
    names = sorted(changes)
    shown = [f"{'/' if absolute else ''}{n or '.'} ({changes[n]})" for n in names[:MAX_FILES]]
    if len(names) > MAX_FILES:
        shown.append(f"and {len(names) - MAX_FILES} more")
    return ", ".join(shown)
