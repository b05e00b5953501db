"""The runtime mounts of one exec: what each IR mount becomes on the host, and its cleanup.

* ``bind`` of a snapshot: an overlay of its layers with a throwaway upper (read-only unless the
  mount says otherwise; an rw mount's writes are discarded unless it is an output, whose upper then
  becomes a layer); a local context is bound directly; ``selector`` is resolved inside the input.
* ``cache``: ``mounts/<id>`` in the store, created once (uid/gid/mode; filled from a shared cache's
  copy, ``--cache-from``, else from the input);
  ``shared`` holds a shared lock, ``locked`` an exclusive one, ``private`` takes the dir if it is free
  and otherwise works on a fresh copy.
* ``tmpfs``; ``secret`` as a file on a private tmpfs dir outside the rootfs (or an env var);
  ``ssh`` as a proxy socket to the granted agent, and ``SSH_AUTH_SOCK`` set to the first ssh
  mount's target unless the step's environment sets it (BuildKit's client does this when it
  writes the exec; here it is derived at run time from the target, which is already in the op, so
  the variable is never in the graph, the cache key or the image config).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ir import ops as irops

from backend.errors import GrantError, SolveError
from backend.fs import safefs
from backend.fs.mountpoints import resolve_in_root
from backend.ops.workspace import Step, Workspace, copy_context
from backend.result import Snapshot
from backend.runtime import spec
from backend.runtime.sshproxy import SSHProxy
from backend.snapshot.layertree import apply_layers


@dataclass
class Prepared:
    mounts: list = field(default_factory=list)  # runtime mounts
    env: list[str] = field(default_factory=list)  # secret env vars
    outputs: dict[int, tuple[list[Path], Path]] = field(default_factory=dict)  # output -> (lowers, upper)
    secrets: list[bytes] = field(default_factory=list)  # values this step mounts
    caches: list[tuple[str, Path]] = field(default_factory=list)  # writable cache mounts: (target, host dir)
    # the secret and ssh mounts and secret env vars among the above: a debug shell gets them only when
    # asked (backend.ops.debugshell)
    private: list = field(default_factory=list)


def secret_dir() -> Path:
    """A 0700 dir on a tmpfs for secret files and run bundles ($XDG_RUNTIME_DIR, else /dev/shm)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/dev/shm"
    if not os.path.isdir(base):
        base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="irctl-", dir=base))


def missing_grant(m: irops.Mount, options) -> str:
    """Why mount ``m`` cannot be given with ``options`` (``SolveOptions``): a required secret or ssh
    agent that was not granted; "" when it can (an optional one is simply left out)."""
    if m.secret is not None and m.secret.required and m.secret.id not in options.secrets:
        return (f"secret {m.secret.id!r} is required but was not given "
                f"(pass --secret id={m.secret.id},src=FILE or env=VAR)")
    if m.type == "ssh" and m.ssh is not None and m.ssh.required and m.ssh.id not in options.ssh:
        return (f"ssh agent {m.ssh.id!r} is required but was not given "
                f"(pass --ssh {m.ssh.id}=SOCKET, or --ssh default with $SSH_AUTH_SOCK set)")
    return ""


def prepare(ws: Workspace, stack: contextlib.ExitStack, step: Step, ex: irops.ExecOp,
            inputs: list[Snapshot], secrets_dir: Path) -> Prepared:
    out = Prepared()
    step_name = step.description or step.digest
    opts = ws.options
    for m in ex.mounts[1:]:
        if m.type == "bind":
            _bind(ws, stack, m, inputs, out)
        elif m.type == "cache":
            _cache(ws, stack, step, m, inputs, out)
        elif m.type == "tmpfs":
            size = m.tmpfs.size if m.tmpfs is not None and m.tmpfs.size else None
            out.mounts.append(spec.TmpfsMount(m.target, size))
        elif m.type == "secret":
            s = m.secret
            assert s is not None
            value = opts.secrets.get(s.id)  # type: ignore[attr-defined]
            if value is None:
                if s.required:  # (refused before the build started: ExecHandler.grant_problems)
                    raise GrantError(f"{step_name}: {missing_grant(m, opts)}")
                continue
            out.secrets.append(value)
            if s.env:
                out.env.append(f"{s.env}={value.decode('utf-8', 'surrogateescape')}")
                out.private.append(out.env[-1])
                continue
            fd, path = tempfile.mkstemp(prefix="secret-", dir=secrets_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.chown(path, s.uid, s.gid)
            os.chmod(path, s.mode)
            out.mounts.append(spec.FileMount(Path(path), m.target))
            out.private.append(out.mounts[-1])
        elif m.type == "ssh":
            s = m.ssh or irops.SSHOptions()
            agent = opts.ssh.get(s.id)  # type: ignore[attr-defined]
            if agent is None:
                if s.required:
                    raise GrantError(f"{step_name}: {missing_grant(m, opts)}")
                continue
            proxy = stack.enter_context(SSHProxy(Path(agent), secrets_dir, uid=s.uid, gid=s.gid, mode=s.mode))
            out.mounts.append(spec.BindMount(proxy.path, m.target, readonly=True))
            out.private.append(out.mounts[-1])
        else:  # pragma: no cover - validation rejects unknown types
            raise SolveError(f"unknown mount type {m.type!r}")
    out.env.extend(ssh_auth_sock(ex, out.env))
    return out


def ssh_auth_sock(ex: irops.ExecOp, extra_env: list[str]) -> list[str]:
    """``SSH_AUTH_SOCK=<target of the first ssh mount>`` when the exec has one and neither its
    environment nor ``extra_env`` names the variable (an explicit ENV or ARG wins, as in BuildKit).
    Set whether or not an optional agent was granted, as BuildKit does."""
    first = next((m.target for m in ex.mounts[1:] if m.type == "ssh"), None)
    if first is None or any(e.split("=", 1)[0] == "SSH_AUTH_SOCK" for e in (*ex.env, *extra_env)):
        return []
    return [f"SSH_AUTH_SOCK={first}"]


def _selected_dir(root: Path, selector: str) -> Path:
    if not selector:
        return root
    rel = resolve_in_root(root, selector)
    path = root / rel
    if not path.exists():
        raise SolveError(f"mount selector {selector!r}: no such path in the input")
    return path


def _direct_bind_ok(ws: Workspace, snap: Snapshot, selector: str) -> bool:
    """Whether binding the context's selected path straight from the host shows the step what the
    context's copy would (and what BuildKit shows): no socket in it (the scan leaves sockets out, as
    BuildKit transfers none, but a bind would hand the step a live one: an agent's, a docker.sock
    under a home dir used as context), and nothing owned by another user than this process's, which
    the step sees as root (BuildKit's context is all 0:0; another owner would show through, and it is
    not in the key).  Otherwise the mount goes through the context's copy.  No scan at hand: no."""
    found = ws.scans.get(snap.identity)
    if found is None:
        return False
    hidden = (*getattr(found, "sockets", ()), *getattr(found, "foreign_owners", ()))
    if not hidden:
        return True
    rel = resolve_in_root(Path(snap.host_dir), selector) if selector else ""  # type: ignore[arg-type]
    return not any(s == rel or (s.startswith(rel + "/") if rel else True) for s in hidden)


def _bind(ws: Workspace, stack: contextlib.ExitStack, m: irops.Mount, inputs: list[Snapshot], out: Prepared) -> None:
    if m.input < 0:
        snap = None
    else:
        snap = inputs[m.input]
    if snap is not None and snap.host_dir is not None and m.readonly and not snap.include and not snap.exclude \
            and _direct_bind_ok(ws, snap, m.selector):
        out.mounts.append(spec.BindMount(_selected_dir(Path(snap.host_dir), m.selector), m.target, readonly=True))
        return
    lowers = ws.lowers(snap) if snap is not None else []
    work = ws.temp_dir("bind-")
    upper = work / "upper"
    upper.mkdir()
    if m.output < 0:  # writes discarded: the whole scratch goes once unmounted (callbacks run LIFO)
        stack.callback(safefs.rmtree, work, True)
    root = stack.enter_context(ws.snapshotter.mounted(lowers, upper, work / "work"))
    if m.output >= 0:
        if m.selector:
            raise SolveError(f"mount {m.target}: an output mount cannot use a selector")
        out.outputs[m.output] = (lowers, upper)
    out.mounts.append(spec.BindMount(_selected_dir(root, m.selector), m.target, readonly=m.readonly))


def _cache(ws: Workspace, stack: contextlib.ExitStack, step: Step, m: irops.Mount, inputs: list[Snapshot],
           out: Prepared) -> None:
    c = m.cache
    assert c is not None
    store = ws.store

    def create(tmp: Path, restore: bool = True) -> None:
        """A new dir for the mount: a shared cache's copy (``--cache-from``: only here, where the store
        has no dir for the id yet, so a local one is never overwritten; its failure is the solver's
        to handle — it builds again without that cache), else the input's selected path (``from=``),
        else empty; the IR's uid/gid/mode on its root either way."""
        owner = (step.digest, step.description, step.group)
        if restore and ws.images.seed_mount(c.id, tmp, owner):  # type: ignore[attr-defined]
            pass
        elif m.input >= 0:
            flat = tmp.parent / "seed"
            snap = inputs[m.input]
            if snap.host_dir is not None:
                copy_context(ws.context_scan(snap), flat)
            else:
                apply_layers(ws.lowers(snap), flat)
            src = _selected_dir(flat, m.selector)
            os.rename(src, tmp)
        else:
            tmp.mkdir()
        os.chown(tmp, c.uid, c.gid)
        os.chmod(tmp, c.mode)

    path = store.mount_dir(c.id, create)
    if c.sharing == "private":
        fd = store.mount_lock(c.id, exclusive=True, wait=False)
        if fd is None:  # busy: this user gets its own fresh instance, discarded afterwards
            fresh = ws.temp_dir("cache-") / "dir"
            create(fresh, restore=False)  # (the shared cache's copy went into the busy one)
            stack.callback(safefs.rmtree, fresh.parent, True)
            out.mounts.append(spec.BindMount(fresh, m.target, readonly=m.readonly))
            return  # discarded afterwards: nothing to scan for secrets
    else:
        fd = store.mount_lock(c.id, exclusive=c.sharing == "locked")
    stack.callback(os.close, fd)
    out.mounts.append(spec.BindMount(path, m.target, readonly=m.readonly))
    if not m.readonly:
        out.caches.append((m.target, path))
