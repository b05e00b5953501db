"""The git source: what a graph may ask git for, and the git it runs.

The remote and ref come from an untrusted graph and end up on git's command line, so nothing in
them may become an option or a transport that runs code (``--upload-pack=CMD``, ``ext::sh -c …``,
``ssh://-oProxyCommand=…``).  :func:`parse_remote` accepts exactly four shapes — an ``https``,
``http``, ``ssh`` or ``git`` URL, an scp-like ``[user@]host:path`` (git's own rule: a ``:`` before any
``/``), an absolute local path, a ``file:///`` URL — refuses control characters, a leading ``-``
anywhere git could read one, ``<helper>::`` addresses and anything a URL parser could read two ways;
:func:`check_ref` keeps a ref to a plain name or commit.  Both still go after ``--``.

The git that runs sees none of the host's configuration that could run code: no system or global
config (``core.fsmonitor``, ``core.sshCommand``, ``url.*.insteadOf``, credential helpers, filters
such as LFS), no hooks, no templates, none of the caller's ``GIT_*`` variables, and only the
transports in ``GIT_ALLOW_PROTOCOL`` (``file`` only for a granted local repository).

Reading the host: a local path or ``file://`` remote reads a repository of the host, so it is
refused unless it lies (symlinks resolved) under an ``--allow fs.read=PATH`` grant — it, and every
other path git would read for it (:func:`local_paths`: ``NAME.git``, a ``.git`` file's ``gitdir:``,
``commondir``, alternates) — checked in the solver's up-front grant check and again as git starts.  A network remote's host is resolved and checked by
:mod:`backend.ops.netcheck` before git runs (``--allow network.private`` for the host's own and private
networks); git is pinned to the checked address — for http(s) with ``http.curloptResolve`` (and no
redirects), for ssh with ``-o HostName=ADDR -o HostKeyAlias=NAME`` under ``ssh -F /dev/null`` (no
ssh_config, as BuildKit runs it), for git:// with ``url.git://ADDR:PORT/.insteadOf`` (the daemon
sees the address, not the name, as its virtual host).  Nothing behind a proxy from the environment
is pinned (the proxy resolves the name again).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ir import ops as irops

from backend.ops import netcheck
from backend.fs import safefs
from backend.entitlements import Entitlements
from backend.errors import GrantError, SolveError

NETWORK = ("https", "http", "ssh", "git")
_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\.?|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
# HOME and SSH_AUTH_SOCK are not kept: git runs with an empty HOME (no ~/.netrc for curl) and ssh with
# no key files and no agent but the one granted with --ssh default (see Git.__init__)
_KEEP_ENV = ("PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
             "http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
             "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE")
# Settings that keep a hostile repository or remote from running anything; the repository's own
# config is written by irctl (git init), the system and global ones are not read at all.
_SAFE_CONFIG = ("core.hooksPath=/dev/null", "core.fsmonitor=false", "core.askPass=", "credential.helper=",
                "submodule.recurse=false", "fetch.recurseSubmodules=false", "protocol.allow=never",
                "advice.detachedHead=false", "init.defaultBranch=irctl")


@dataclass(frozen=True)
class Remote:
    kind: str  # "local" (a path or file:// URL) or one of NETWORK
    host: str = ""  # network remotes: the host as written (IPv6 without brackets)
    port: int = 0
    path: str = ""  # local remotes: the absolute path on the host


def _refuse(remote: str, why: str) -> SolveError:
    return SolveError(f"git remote {remote!r}: {why}")


def parse_remote(remote: str) -> Remote:
    """What ``remote`` names, or a SolveError saying why irctl will not hand it to git."""
    if not remote:
        raise _refuse(remote, "empty")
    if _CONTROL.search(remote):
        raise _refuse(remote, "contains a control character")
    if remote.startswith("-"):
        raise _refuse(remote, "starts with '-' (git would read it as an option)")
    if "\\" in remote:
        raise _refuse(remote, "contains a backslash")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*::", remote):
        raise _refuse(remote, "<helper>::<address> remotes run a remote helper; use an https, ssh or git URL")
    m = _URL.match(remote)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme == "file":
            if not rest.startswith("/") or "%" in rest:
                raise _refuse(remote, "a file:// remote must be file:///ABSOLUTE/PATH (no host, no %-escapes)")
            return Remote("local", path=rest)
        if scheme not in NETWORK:
            raise _refuse(remote, f"transport {scheme!r} is not allowed (use https, http, ssh, git or file)")
        netloc, _, _path = rest.partition("/")
        if any(c in netloc for c in "%?#") or netloc.count("@") > 1:
            raise _refuse(remote, "the host part has characters URL parsers disagree on")
        user, at, hostport = netloc.rpartition("@")
        if at and not _USER.fullmatch(user if scheme == "ssh" else user.split(":", 1)[0]):
            raise _refuse(remote, f"user {user!r} is not a plain name")
        host, port = _split_port(remote, hostport)
        return Remote(scheme, host=host, port=port or _PORTS[scheme])
    if "://" in remote.split("/", 1)[0]:
        raise _refuse(remote, "not a URL git and irctl read the same way")
    colon, slash = remote.find(":"), remote.find("/")
    if colon >= 0 and (slash < 0 or colon < slash):  # git's rule: scp-like [user@]host:path is ssh
        netloc, path = remote[:colon], remote[colon + 1:]
        user, at, host = netloc.rpartition("@")
        if at and not _USER.fullmatch(user):
            raise _refuse(remote, f"user {user!r} is not a plain name")
        if not _HOST.fullmatch(host) or host.startswith("["):
            raise _refuse(remote, f"host {host!r} is not a host name")
        if not path or path.startswith("-"):
            raise _refuse(remote, "the path after ':' is empty or starts with '-'")
        return Remote("ssh", host=host, port=22)
    if not remote.startswith("/"):
        raise _refuse(remote, "a local repository must be an absolute path (or file:///PATH)")
    return Remote("local", path=remote)


def _split_port(remote: str, hostport: str) -> tuple[str, int]:
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = hostport[:end + 1], hostport[end + 1:]
    else:
        host, _, port_text = hostport.partition(":")
        rest = ":" + port_text if _ else ""
    if not _HOST.fullmatch(host):
        raise _refuse(remote, f"host {host!r} is not a host name")
    port = 0
    if rest:
        if not re.fullmatch(r":[0-9]{1,5}", rest) or not 0 < int(rest[1:]) < 65536:
            raise _refuse(remote, f"port {rest[1:]!r} is not a port number")
        port = int(rest[1:])
    return host.strip("[]"), port


def check_ref(remote: str, ref: str) -> None:
    if not ref:
        return
    if (not _REF.fullmatch(ref) or ".." in ref or "//" in ref or ref.endswith(("/", ".lock", "."))
            or "/." in ref or "@{" in ref):
        raise SolveError(f"git {remote}: ref {ref!r} is not a branch, tag or commit name irctl accepts "
                         "(letters, digits, '.', '_', '-', '/'; no leading '-', no '..')")


def local_paths(path: str, limit: int = 64) -> list[str]:
    """Every host path git may read for the local repository ``path``: the candidates upload-pack
    tries (``path``, ``path.git``, ``path/.git``, ``path.git/.git``), where a ``.git`` *file* points
    (``gitdir:``), a worktree's ``commondir`` and ``objects/info/alternates``, transitively.  Each must
    lie under the grant, or a granted directory could lead git anywhere."""
    seen: list[str] = []
    todo = [path, path + ".git", os.path.join(path, ".git"), os.path.join(path + ".git", ".git")]
    while todo and len(seen) < limit:
        p = os.path.realpath(todo.pop(0))
        if p in seen or not os.path.exists(p):
            continue
        seen.append(p)
        if os.path.isfile(p) and os.path.basename(p) == ".git":
            text = _small(p)
            if text.startswith("gitdir:"):
                todo.append(os.path.join(os.path.dirname(p), text[len("gitdir:"):].strip()))
        elif os.path.isdir(p):
            common = _small(os.path.join(p, "commondir")).strip()
            if common:
                todo.append(os.path.join(p, common))
            objects = os.path.join(p, "objects")
            for line in _small(os.path.join(objects, "info", "alternates")).splitlines():
                if line.strip() and not line.startswith("#"):
                    todo.append(os.path.join(objects, line.strip()))
            if not os.path.lexists(os.path.join(p, ".git")):  # a git dir: git follows every link in it
                todo.extend(_links_in(p))                   # (objects/, refs/, HEAD, packed-refs…)
    if todo:
        seen.append("(more linked paths than irctl follows)")
    return seen


def _links_in(gitdir: str) -> list[str]:
    """Where the symlinks inside ``gitdir`` lead: an ``objects`` or ``refs`` that is a link to another
    repository makes git read that repository, so each target is checked like the repository itself."""
    try:
        targets = {os.path.realpath(os.path.join(gitdir, os.fsdecode(e.rel)))
                   for e in safefs.walk(gitdir, sort=False, where="in a local git repository")
                   if stat.S_ISLNK(e.st.st_mode)}
    except OSError as e:
        return [f"(unreadable: {safefs.os_error_text(e)})"]
    inside = os.path.realpath(gitdir) + os.sep
    return sorted(t for t in targets if not t.startswith(inside))  # links within it are walked already


def _small(path: str) -> str:
    """The start of a regular file (never blocks on a FIFO or device), or ""."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, 65536).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _ungranted(path: str, granted: Entitlements) -> str | None:
    """The first path git would read for ``path`` that no grant covers; nothing is read on the host
    unless ``path`` itself is granted."""
    if not granted.may_read(path):
        return os.path.realpath(path)
    return next((p for p in local_paths(path) if not granted.may_read(p)), None)


def check_grants(g: irops.GitSource, granted: Entitlements, where: str) -> None:
    """Before anything runs: the remote is well-formed and, if it reads the host, granted."""
    try:
        r = parse_remote(g.remote)
        check_ref(g.remote, g.ref)
    except SolveError as e:
        raise GrantError(f"{where}: {e}") from None
    if r.kind == "local":
        outside = _ungranted(r.path, granted)
        if outside is not None:
            via = "" if outside == os.path.realpath(r.path) else f" (through {outside})"
            raise GrantError(f"{where}: the git source reads the host repository {r.path}{via}, which was not "
                             f"granted; pass --allow fs.read={r.path if not via else outside} (or a directory "
                             "above it)")
    if r.kind != "local" and not granted.network_private:
        why = netcheck.literal_refusal(r.host)
        if why:
            raise GrantError(f"{where}: git remote {g.remote}: {r.host} is {why}; the host's own or private "
                             f"networks are reachable only when granted; pass {netcheck.GRANT}")


class Git:
    """git, run the safe way for one remote (see the module docstring)."""

    def __init__(self, g: irops.GitSource, granted: Entitlements, agent: str | os.PathLike | None = None) -> None:
        """``agent``: the ssh agent socket granted with ``--ssh default``, the only credential git may
        use; without it git authenticates as nobody (no agent, no ~/.ssh keys, no ~/.netrc)."""
        self.g = g
        self.remote = parse_remote(g.remote)
        check_ref(g.remote, g.ref)
        config = list(_SAFE_CONFIG)
        protocols = list(NETWORK)
        if self.remote.kind == "local":
            if _ungranted(self.remote.path, granted) is not None:  # checked up front too; now, as git runs
                raise GrantError(f"git {g.remote}: not under an --allow fs.read= grant")
            protocols.append("file")
        else:
            checked = netcheck.resolve(self.remote.host, self.remote.port, granted.network_private,
                                       f"git {g.remote}")
            if self.remote.kind in ("http", "https") and netcheck.refusal(self.remote.host) is None \
                    and checked.address != self.remote.host:
                addr = f"[{checked.address}]" if ":" in checked.address else checked.address
                config.append(f"http.curloptResolve={self.remote.host}:{self.remote.port}:{addr}")
            if self.remote.kind == "git" and netcheck.refusal(self.remote.host) is None:
                # git:// has no resolve option: rewrite the URL's host part to the checked address
                addr = f"[{checked.address}]" if ":" in checked.address else checked.address
                prefix = g.remote[:g.remote.index("/", len("git://")) + 1] if "/" in g.remote[6:] else g.remote
                config.append(f"url.git://{addr}:{self.remote.port}/.insteadOf={prefix}")
            config.append(f"http.followRedirects={'initial' if granted.network_private else 'false'}")
        self.config = [a for c in config for a in ("-c", c)]
        # ssh: no ssh_config (-F /dev/null, as BuildKit does: no ProxyCommand, no aliases), and pinned to
        # the checked address, the name kept for known_hosts
        ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ClearAllForwardings=yes",
               "-o", "IdentityFile=none", "-o", f"IdentityAgent={os.fspath(agent) if agent else 'none'}"]
        if self.remote.kind == "ssh" and netcheck.refusal(self.remote.host) is None:
            ssh += ["-o", f"HostName={checked.address}", "-o", f"HostKeyAlias={self.remote.host}"]
        env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
                   GIT_ALLOW_PROTOCOL=":".join(protocols), GIT_PROTOCOL_FROM_USER="0", GIT_ASKPASS="/bin/false",
                   SSH_ASKPASS="/bin/false", GIT_SSH_VARIANT="ssh", LC_ALL="C",
                   GIT_SSH_COMMAND=" ".join(shlex.quote(a) for a in ssh))
        self.env = env

    def run(self, *args: str, cwd: Path, timeout: float = 600) -> str:
        try:
            with tempfile.TemporaryDirectory(prefix="irctl-git-home-") as home:  # empty: no ~/.netrc
                r = subprocess.run(["git", *self.config, *args], cwd=cwd, capture_output=True, text=True,
                                   env={**self.env, "HOME": home, "GIT_CEILING_DIRECTORIES": str(cwd.parent)},
                                   timeout=timeout, stdin=subprocess.DEVNULL, errors="replace")
        except (OSError, subprocess.SubprocessError) as e:
            raise SolveError(f"git {args[0]} {self.g.remote}: {e}") from None
        if r.returncode != 0:
            raise SolveError(f"git {args[0]} {self.g.remote}: {r.stderr.strip()[-2000:]}")
        return r.stdout

    def resolve_ref(self) -> str:
        """The commit ``ref`` names on the remote (``git ls-remote``), from an empty directory."""
        with tempfile.TemporaryDirectory(prefix="irctl-git-") as tmp:
            out = self.run("ls-remote", "--", self.g.remote, self.g.ref or "HEAD", cwd=Path(tmp), timeout=120)
        lines = [line.split()[0] for line in out.splitlines() if line.strip()]
        if not lines:
            raise SolveError(f"git {self.g.remote}: no ref {self.g.ref or 'HEAD'!r}")
        return lines[0]

    def checkout(self, layer: Path, work: Path) -> None:
        g = self.g
        checkout = work / "checkout"
        self.run("init", "-q", "--template=", "--", str(checkout), cwd=work)
        self.run("remote", "add", "--", "origin", g.remote, cwd=checkout)
        self.run("fetch", "-q", "--no-tags", "--depth", "1", "--", "origin", g.ref or "HEAD", cwd=checkout)
        self.run("checkout", "-q", "FETCH_HEAD", cwd=checkout)
        if not g.keep_git_dir:
            safefs.rmtree(checkout / ".git")  # iterative: a hostile repo may nest deeper than the stack
        src = checkout
        for part in Path(g.subdir).parts if g.subdir else ():
            src = src / part
            if src.is_symlink() or not src.is_dir():  # a link in the repo must not lead out to the host
                raise SolveError(f"git {g.remote}: {g.subdir!r} is not a directory in the checkout")
        for entry in os.listdir(src):
            os.rename(src / entry, layer / entry)


def fetch_key_extra(g: irops.GitSource, granted: Entitlements, agent: str | os.PathLike | None = None) -> str:
    if re.fullmatch(r"[0-9a-f]{40}", g.ref or ""):
        return g.ref
    return Git(g, granted, agent).resolve_ref()


def fetch(g: irops.GitSource, layer: Path, work: Path, granted: Entitlements,
          agent: str | os.PathLike | None = None) -> None:
    Git(g, granted, agent).checkout(layer, work)
