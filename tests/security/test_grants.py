"""Class 2: a graph reads the host only through what the command line grants.

Local git repositories (a path or ``file://``; a 0700 root-only one) need ``--allow fs.read=``;
http sources, ``ADD http://…`` and git remotes on the host's loopback, link-local (the cloud metadata
address), private or otherwise non-global addresses — literal, or a name that resolves there, or a
redirect that leads there — need ``--allow network.private``.  Refusals name the grant; with the
grant, the same graph works (real servers on 127.0.0.1).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from backend.ops import netcheck
from backend.errors import GrantError
from backend.ops import http as http_source
from ir import builder as b
from ir import ops
from tests.support.cli import irctl
from tests.support.inputs import make_repo, write_graph

SECRET = "root-only-repository-secret-7f3a"
LOOPBACK_SECRET = "loopback-service-token-91c2"


def layer_files(stdout: str) -> dict[str, str]:
    out = {}
    for layer in json.loads(stdout)["layers"]:
        for p in Path(layer).rglob("*"):
            if p.is_file():
                out[str(p.relative_to(layer))] = p.read_text(errors="replace")
    return out


def tree_has(root: Path, needle: str) -> bool:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes():
            return True
    return False


# ------------------------------------------------------------------------------ local git repos

@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """A repository in a 0700 directory (as root: root-only) holding a secret."""
    return make_repo(tmp_path / "vault", {"secret.txt": SECRET + "\n"})


def test_local_git_repository_needs_fs_read(tmp_path: Path, vault: Path) -> None:
    granted_elsewhere = tmp_path / "elsewhere"
    granted_elsewhere.mkdir()
    (granted_elsewhere / "link").symlink_to(vault)  # a link in a granted dir does not grant its target
    remotes = [str(vault), f"file://{vault}", str(vault) + "/", f"{vault}/.git", f"{granted_elsewhere}/../vault/repo",
               f"{granted_elsewhere}/link", f"file://{granted_elsewhere}/link"]
    for i, remote in enumerate(remotes):
        cache = tmp_path / f"cache{i}"
        graph = write_graph(tmp_path / f"g{i}.ir", b.git(remote, "main"))
        for allow in ([], ["--allow", f"fs.read={granted_elsewhere}"]):
            r = irctl("solve", graph, "--cache-dir", cache, *allow, "--progress", "plain", timeout=120)
            assert r.code != 0, (remote, allow)
            assert "--allow fs.read=" in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert SECRET not in r.stdout + r.stderr
            assert not cache.exists() or not tree_has(cache, SECRET), remote


def test_local_git_repository_with_the_grant(tmp_path: Path, vault: Path) -> None:
    for i, (remote, grant) in enumerate([(str(vault), vault.parent), (f"file://{vault}", vault),
                                         (str(vault), vault.parent.parent)]):
        graph = write_graph(tmp_path / f"g{i}.ir", b.git(remote, "main"))
        r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", f"fs.read={grant}",
                  "--progress", "plain", timeout=120)
        assert r.code == 0, r.stderr
        assert layer_files(r.stdout)["secret.txt"] == SECRET + "\n"


def test_dockerfile_add_of_a_local_repository_is_refused(tmp_path: Path, vault: Path) -> None:
    """``ADD file:///…/repo`` or a local path ADD never reads outside the context: either the frontend
    treats it as a context path, or the git source needs the grant."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for src in (f"file://{vault}", f"{vault}.git", f"git@localhost:{vault}"):
        (ctx / "Dockerfile").write_text(f"FROM scratch\nADD {src} /r\n")
        r = irctl("build", ctx, "--cache-dir", tmp_path / "cache", "--progress", "plain", timeout=120)
        assert r.code != 0, src
        assert SECRET not in r.stderr and "Traceback" not in r.stderr
        assert not tree_has(tmp_path / "cache", SECRET) if (tmp_path / "cache").exists() else True


# ------------------------------------------------------------------------------------ http

class Served:
    def __init__(self, host: str = "127.0.0.1", redirect_to: str = "") -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                body = LOOPBACK_SECRET.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def _loopback_name() -> str | None:
    """This machine's host name when it resolves to a loopback address (as /etc/hosts often has it)."""
    name = socket.gethostname()
    try:
        return name if all(netcheck.refusal(i[4][0]) for i in socket.getaddrinfo(name, 80)) else None
    except OSError:
        return None


def _private_urls(port: int) -> list[str]:
    urls = [f"http://127.0.0.1:{port}/f", f"http://[::1]:{port}/f", "http://169.254.169.254/latest/meta-data/",
            f"http://localhost:{port}/f", f"http://LOCALHOST:{port}/f",
            f"http://0.0.0.0:{port}/f", f"http://2130706433:{port}/f", f"http://127.1:{port}/f",
            f"http://0x7f000001:{port}/f", f"http://0177.0.0.1:{port}/f", f"http://127.0.1:{port}/f",
            f"http://127.0.0.2:{port}/f", f"http://[0:0:0:0:0:0:0:1]:{port}/f",
            f"http://[::ffff:127.0.0.1]:{port}/f", f"http://[::127.0.0.1]:{port}/f",
            "http://10.0.0.1/f", "http://172.16.0.1/f", "http://192.168.1.1/f", "http://100.64.0.1/f",
            "http://[fc00::1]/f", "http://[fe80::1]/f", "http://224.0.0.1/f", "http://[ff02::1]/f",
            f"http://user@127.0.0.1:{port}/f", f"https://127.0.0.1:{port}/f", "http://[2002:7f00:1::]/f",
            f"http://127.0.0.1.nip.invalid.localhost:{port}/f"]
    name = _loopback_name()
    if name:
        urls.append(f"http://{name}:{port}/f")
    return urls


def test_http_source_to_private_addresses_is_refused(tmp_path: Path, served: Served) -> None:
    for i, url in enumerate(_private_urls(served.port)):
        graph = write_graph(tmp_path / f"g{i}.ir", b.http(url))
        r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--progress", "plain", timeout=60)
        assert r.code != 0, url
        assert "Traceback" not in r.stderr
        assert "--allow network.private" in r.stderr or "not a URL irctl can fetch" in r.stderr, (url, r.stderr)
    assert served.hits == []


def test_http_source_to_loopback_with_the_grant(tmp_path: Path, served: Served) -> None:
    for i, url in enumerate([f"http://127.0.0.1:{served.port}/f", f"http://localhost:{served.port}/f"]):
        graph = write_graph(tmp_path / f"g{i}.ir", b.http(url))
        r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", "network.private",
                  "--progress", "plain", timeout=60)
        assert r.code == 0, r.stderr
        assert layer_files(r.stdout)["f"] == LOOPBACK_SECRET
    assert served.hits == ["/f", "/f"]


def test_dockerfile_add_from_loopback_needs_the_grant(tmp_path: Path, served: Served) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM scratch\nADD http://127.0.0.1:{served.port}/token /token\n")
    r = irctl("build", ctx, "--cache-dir", tmp_path / "cache", "--progress", "plain", timeout=60)
    assert r.code != 0
    assert "Dockerfile:2" in r.stderr and "--allow network.private" in r.stderr, r.stderr
    assert served.hits == []
    r = irctl("build", ctx, "--cache-dir", tmp_path / "cache", "--allow", "network.private", "--progress", "plain",
              "--output", f"type=local,dest={tmp_path / 'out'}", timeout=60)
    assert r.code == 0, r.stderr
    assert (tmp_path / "out" / "token").read_text() == LOOPBACK_SECRET


class _Step:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture
def public_127_0_0_2(monkeypatch):
    """Treat 127.0.0.2 as if it were a public address: a stand-in for an allowed host on the internet."""
    real = netcheck._kind
    monkeypatch.setattr(netcheck, "_kind", lambda a: None if str(a) == "127.0.0.2" else real(a))


def test_redirect_from_an_allowed_host_to_loopback_is_refused(tmp_path: Path, served: Served,
                                                              public_127_0_0_2) -> None:
    targets = [f"http://127.0.0.1:{served.port}/token", f"http://localhost:{served.port}/token",
               "http://169.254.169.254/latest/meta-data/", f"http://[::1]:{served.port}/token"]
    for target in targets:
        hop = Served("127.0.0.2", redirect_to=target)
        try:
            layer = tmp_path / "layer"
            shutil.rmtree(layer, ignore_errors=True)
            layer.mkdir()
            with pytest.raises(GrantError, match="--allow network.private"):
                http_source.fetch(ops.HTTPSource(f"http://127.0.0.2:{hop.port}/start"), layer, _Step(), False)
            assert hop.hits == ["/start"]
            assert list(layer.iterdir()) == []
        finally:
            hop.close()
    assert served.hits == []
    # the same chain is followed with the grant
    hop = Served("127.0.0.2", redirect_to=f"http://127.0.0.1:{served.port}/token")
    try:
        layer = tmp_path / "layer2"
        layer.mkdir()
        http_source.fetch(ops.HTTPSource(f"http://127.0.0.2:{hop.port}/start"), layer, _Step(), True)
        assert (layer / "start").read_text() == LOOPBACK_SECRET
    finally:
        hop.close()


def test_redirect_to_another_scheme_or_in_a_loop_is_refused(tmp_path: Path, public_127_0_0_2) -> None:
    from backend.errors import SolveError

    for target, message in (("file:///etc/passwd", "not http or https"), ("gopher://127.0.0.2/x", "not http"),
                            ("/again", "redirects")):
        hop = Served("127.0.0.2", redirect_to=target)
        try:
            with pytest.raises(SolveError, match=message):
                http_source.fetch(ops.HTTPSource(f"http://127.0.0.2:{hop.port}/start"), tmp_path, _Step(), True)
        finally:
            hop.close()


def test_the_connection_goes_to_the_checked_address(tmp_path: Path, served: Served, monkeypatch) -> None:
    """No DNS-rebinding window: a name is resolved once; a second answer (here: a dead address)
    is never asked for, the checked address is what is connected to."""
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", served.port))],
                    [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", served.port))]])
    real = socket.getaddrinfo
    monkeypatch.setattr(netcheck.socket, "getaddrinfo",
                        lambda host, *a, **k: next(answers) if host == "rebind.example" else real(host, *a, **k))
    http_source.fetch(ops.HTTPSource(f"http://rebind.example:{served.port}/x"), tmp_path, _Step(), True)
    assert (tmp_path / "x").read_text() == LOOPBACK_SECRET


# -------------------------------------------------------------------------------- git remotes

def test_git_remotes_on_private_addresses_are_refused(tmp_path: Path) -> None:
    remotes = ["git://127.0.0.1/repo", "http://127.0.0.1:9/r.git", "https://[::1]/r.git", "ssh://localhost/x",
               "git@127.0.0.1:x", "ssh://root@169.254.169.254/x", "https://10.1.2.3/r.git", "git://[fe80::1]/r",
               "https://LocalHost/r.git", "https://a.localhost./r.git"]
    name = _loopback_name()
    if name:
        remotes += [f"https://{name}/r.git", f"git@{name}:r"]
    for i, remote in enumerate(remotes):
        graph = write_graph(tmp_path / f"g{i}.ir", b.git(remote, "main"))
        r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--progress", "plain", timeout=60)
        assert r.code != 0, remote
        assert "--allow network.private" in r.stderr and "Traceback" not in r.stderr, (remote, r.stderr)


@pytest.fixture
def git_daemon(tmp_path: Path, vault: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={vault.parent}",
                             "--listen=127.0.0.1", f"--port={port}", str(vault.parent)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"})
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            threading.Event().wait(0.05)
    yield port
    os.killpg(proc.pid, signal.SIGKILL)  # git daemon runs git-daemon as its child
    proc.wait()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "name"])
def test_git_remote_on_loopback_with_the_grant(tmp_path: Path, git_daemon: int, host: str) -> None:
    """Refused without the grant; with it, fetched — by a name too (git:// pinned to the checked address)."""
    if host == "name":
        host = _loopback_name() or pytest.skip("no host name resolving to loopback")
    graph = write_graph(tmp_path / "g.ir", b.git(f"git://{host}:{git_daemon}/repo", "main"))
    r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--progress", "plain", timeout=120)
    assert r.code != 0 and "--allow network.private" in r.stderr
    r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", "network.private", "--progress", "plain",
              timeout=120)
    assert r.code == 0, r.stderr
    assert layer_files(r.stdout)["secret.txt"] == SECRET + "\n"


def test_ssh_runs_without_ssh_config_and_pinned_to_the_checked_address(tmp_path: Path) -> None:
    """A stand-in ``ssh`` on PATH records how git runs it: ``-F /dev/null`` (no ProxyCommand or
    alias from ssh_config), ``HostName=`` the address irctl checked, the name kept for known_hosts."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh-args"
    (bindir / "ssh").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {log}\nexit 1\n")
    (bindir / "ssh").chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "GIT_SSH_COMMAND": f"touch {tmp_path / 'user-ssh-command'}"}
    graph = write_graph(tmp_path / "g.ir", b.git("git@localhost:team/repo.git", "main"))
    r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", "network.private", env=env, timeout=60)
    assert r.code != 0  # the stand-in refuses
    args = log.read_text().splitlines()
    assert args[:2] == ["-F", "/dev/null"], args
    assert "HostName=127.0.0.1" in args or "HostName=::1" in args, args
    assert "HostKeyAlias=localhost" in args and "BatchMode=yes" in args
    assert not (tmp_path / "user-ssh-command").exists()


def test_a_proxy_from_the_environment_is_used_but_is_no_way_around(tmp_path: Path, served: Served,
                                                                   monkeypatch) -> None:
    """With ``http_proxy`` set, a public URL goes through the proxy (the user's choice, even on
    loopback); a private target is refused before the proxy is asked."""
    real = socket.getaddrinfo
    monkeypatch.setattr(netcheck.socket, "getaddrinfo", lambda host, *a, **k: (
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))] if host == "public.example"
        else real(host, *a, **k)))
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{served.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    http_source.fetch(ops.HTTPSource("http://public.example/f"), tmp_path, _Step(), False)
    assert served.hits == ["http://public.example/f"]
    assert (tmp_path / "f").read_text() == LOOPBACK_SECRET
    for url in ("http://127.0.0.1:1/x", "http://169.254.169.254/x", "http://localhost/x"):
        with pytest.raises(GrantError, match="--allow network.private"):
            http_source.fetch(ops.HTTPSource(url), tmp_path, _Step(), False)
    assert served.hits == ["http://public.example/f"]


def test_a_granted_directory_cannot_lead_git_outside_the_grant(tmp_path: Path, vault: Path) -> None:
    """Ways a path under the grant makes git read another repository: ``NAME.git`` next to it (git
    tries that name too) as a link, a ``.git`` file (``gitdir:``), ``objects/info/alternates``."""
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "foo.git").symlink_to(vault)  # the remote names granted/foo; git tries granted/foo.git
    wt = granted / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {vault / '.git'}\n")
    alt = make_repo(granted / "alt", {"other.txt": "x\n"})
    (alt / ".git" / "objects" / "info").mkdir(exist_ok=True)
    (alt / ".git" / "objects" / "info" / "alternates").write_text(f"{vault / '.git' / 'objects'}\n")
    for i, remote in enumerate([str(granted / "foo"), str(wt), f"file://{wt}", str(alt)]):
        graph = write_graph(tmp_path / f"g{i}.ir", b.git(remote, "main"))
        r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", f"fs.read={granted}",
                  "--progress", "plain", timeout=120)
        assert r.code != 0, remote
        assert "--allow fs.read=" in r.stderr and str(vault) in r.stderr, r.stderr
    assert not tree_has(tmp_path / "cache", SECRET) if (tmp_path / "cache").exists() else True


def test_links_inside_a_granted_repository_cannot_lead_git_outside_the_grant(tmp_path: Path, vault: Path) -> None:
    """A repository under the grant whose ``objects`` and ``refs`` (or only a packed ref, or
    ``HEAD``) are symlinks into an ungranted repository: git follows links inside a git dir, so the
    targets are checked like the repository (found by the review after issue 11)."""
    granted = tmp_path / "granted"
    granted.mkdir()
    bare = granted / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    for name in ("objects", "refs"):
        shutil.rmtree(bare / name)
        (bare / name).symlink_to(vault / ".git" / name)
    wt = make_repo(granted / "wt", {"x.txt": "x\n"})  # a work tree whose .git/objects is a link
    shutil.rmtree(wt / ".git" / "objects")
    (wt / ".git" / "objects").symlink_to(vault / ".git" / "objects")
    deep = make_repo(granted / "deep", {"x.txt": "x\n"})  # one loose-object directory linked
    loose = next(p for p in sorted((vault / ".git" / "objects").iterdir()) if len(p.name) == 2)
    shutil.rmtree(deep / ".git" / "objects" / loose.name, ignore_errors=True)
    (deep / ".git" / "objects" / loose.name).symlink_to(loose)
    for i, remote in enumerate([str(bare), f"file://{bare}", str(wt), str(deep)]):
        graph = write_graph(tmp_path / f"g{i}.ir", b.git(remote, "main"))
        r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", f"fs.read={granted}",
                  "--progress", "plain", timeout=120)
        assert r.code != 0, (remote, r.stdout)
        assert "--allow fs.read=" in r.stderr and str(vault) in r.stderr, r.stderr
    assert not tree_has(tmp_path / "cache", SECRET) if (tmp_path / "cache").exists() else True
    plain = make_repo(granted / "plain", {"ok.txt": "ok\n"})  # links that stay inside are fine
    (plain / ".git" / "HEAD.link").symlink_to(plain / ".git" / "HEAD")
    graph = write_graph(tmp_path / "ok.ir", b.git(str(plain), "main"))
    r = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--allow", f"fs.read={granted}",
              "--progress", "plain", timeout=120)
    assert r.code == 0, r.stderr


@pytest.mark.parametrize("remote,kind,where", [
    ("/srv/a:b", "local", "/srv/a:b"),  # a '/' before the ':': a path (git's rule)
    ("srv:a/b", "ssh", "srv"),  # a ':' before any '/': scp-like ssh
    ("git@srv:/abs/path", "ssh", "srv"),
    ("C:/x", "ssh", "C"),  # on Linux git reads a drive letter as a host too
    ("file:///srv/r", "local", "/srv/r"),
    ("https://h.example:8443/r.git", "https", "h.example"),
    ("ssh://git@[::1]:2222/r", "ssh", "::1"),
])
def test_remote_kinds_follow_gits_own_rules(remote: str, kind: str, where: str) -> None:
    from backend.ops.git import parse_remote

    r = parse_remote(remote)
    assert r.kind == kind and (r.path if kind == "local" else r.host) == where


@pytest.mark.parametrize("remote", ["srv", "./repo", "../repo", "repo:", ":path", "file://host/r", "file:///a%2fb",
                                    "ftp://h/r", "git+ssh://h/r", "ssh://h:99999/r", "ssh://h:x/r",
                                    "https://h/r\\x", "https://[::1%eth0]/r"])
def test_remotes_irctl_will_not_hand_to_git(remote: str) -> None:
    from backend.errors import SolveError
    from backend.ops.git import parse_remote

    with pytest.raises(SolveError):
        parse_remote(remote)


def test_https_is_verified_against_the_name_while_connecting_to_the_checked_address(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """Pinning must not weaken TLS: the certificate is checked for the URL's name (SNI too)."""
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl missing")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=public.example", "-addext", "subjectAltName=DNS:public.example", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    hop = Served("127.0.0.2")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    hop.server.socket = ctx.wrap_socket(hop.server.socket, server_side=True)
    real = socket.getaddrinfo
    monkeypatch.setattr(netcheck.socket, "getaddrinfo", lambda host, *a, **k: (
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", hop.port))]
        if host in ("public.example", "other.example") else real(host, *a, **k)))
    real_kind = netcheck._kind
    monkeypatch.setattr(netcheck, "_kind", lambda a: None if str(a) == "127.0.0.2" else real_kind(a))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    try:
        http_source.fetch(ops.HTTPSource(f"https://public.example:{hop.port}/f"), tmp_path, _Step(), False)
        assert (tmp_path / "f").read_text() == LOOPBACK_SECRET
        from backend.errors import SolveError

        with pytest.raises(SolveError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            http_source.fetch(ops.HTTPSource(f"https://other.example:{hop.port}/g"), tmp_path, _Step(), False)
    finally:
        hop.close()


# ------------------------------------------------------------------------------ the caller's credentials

def test_git_never_uses_the_callers_credentials_without_a_grant(tmp_path: Path) -> None:
    """A graph's git remote must not authenticate as the caller: not with the ssh agent in
    ``$SSH_AUTH_SOCK``, not with the keys in ``~/.ssh``, not with ``~/.netrc`` (curl reads it) —
    or an untrusted graph fetches the caller's private repositories into the image (found by the
    review after issue 11).  The agent is used only when granted with ``--ssh default``, as BuildKit's
    git source uses only the forwarded agent.  ssh is a recording stand-in first on PATH; the https
    server is real and records any Authorization header."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login caller password netrc-password-c81f\n")
    os.chmod(home / ".netrc", 0o600)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh.log"
    (bin_dir / "ssh").write_text(f'#!/bin/sh\n{{ echo "ARGS $*"; echo "AGENT=$SSH_AUTH_SOCK"; }} >> {log}\nexit 255\n')
    os.chmod(bin_dir / "ssh", 0o755)
    agent = tmp_path / "agent.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(agent))
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HOME": str(home), "SSH_AUTH_SOCK": str(agent), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        ssh_graph = write_graph(tmp_path / "s.ir", b.git("ssh://git@127.0.0.1:2222/org/private.git", "main"))
        r = irctl("solve", ssh_graph, "--cache-dir", tmp_path / "cache", "--allow", "network.private",
                  "--progress", "plain", env=env, timeout=120)
        assert r.code != 0
        text = log.read_text()
        assert "IdentityAgent=none" in text and "IdentityFile=none" in text and f"AGENT={agent}" not in text, text
        log.unlink()
        r = irctl("solve", ssh_graph, "--cache-dir", tmp_path / "cache", "--allow", "network.private",
                  "--ssh", f"default={agent}", "--progress", "plain", env=env, timeout=120)
        text = log.read_text()
        assert f"IdentityAgent={agent}" in text and "IdentityFile=none" in text, text  # granted: that agent only
        port = server.server_address[1]
        https_graph = write_graph(tmp_path / "h.ir", b.git(f"http://127.0.0.1:{port}/org/private.git", "main"))
        r = irctl("solve", https_graph, "--cache-dir", tmp_path / "cache", "--allow", "network.private",
                  "--progress", "plain", env=env, timeout=120)
        assert r.code != 0 and seen, (r.stderr, seen)
        assert seen == [""] * len(seen), seen  # no credentials from ~/.netrc
    finally:
        server.shutdown()
        sock.close()
