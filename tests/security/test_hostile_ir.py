"""Hostile IR files: a graph may only reach the host through what the user granted on the command
line.  Each case is solved by the real ``irctl solve``; refused ones must fail with a clear error
(a key path or the missing grant), contained ones must not touch the host."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import msgpack
import pytest

from ir import builder as b
from ir.codec import HEADER, MAGIC, VERSION, dump_document, load_raw
from tests.support.cli import irctl

pytestmark = pytest.mark.e2e

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def raw_of(state: b.State) -> dict:
    return load_raw(dump_document(b.build_document({"default": state})))


def _replace(obj, old: str, new: str):
    if isinstance(obj, dict):
        return {_replace(k, old, new): _replace(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace(v, old, new) for v in obj]
    return new if obj == old else obj


def redigest(raw: dict) -> dict:
    """Store every op under the digest of its (possibly edited) bytes, references updated."""
    changed = True
    while changed:
        changed = False
        for digest, op in list(raw["ops"].items()):
            real = "sha256:" + hashlib.sha256(msgpack.packb(op, use_bin_type=True)).hexdigest()
            if real != digest:
                raw = _replace(raw, digest, real)
                changed = True
                break
    return raw


def encode(raw: dict) -> bytes:
    raw = {k: raw[k] for k in sorted(raw)}
    raw["ops"] = {k: raw["ops"][k] for k in sorted(raw["ops"])}
    return HEADER.pack(MAGIC, VERSION, 0, 0) + msgpack.packb(raw, use_bin_type=True)


def the_op(raw: dict, kind: str) -> dict:
    return next(op for op in raw["ops"].values() if kind in op)


def base() -> b.State:
    return b.oci_layout("busybox", ref="latest").with_env("PATH", PATH.split("=", 1)[1])


def solve(tmp: Path, data: bytes, *args: str, layout: Path | None = None):
    g = tmp / f"g-{uuid.uuid4().hex[:8]}.ir"
    g.write_bytes(data)
    grants = ["--oci-layout", f"busybox={layout}"] if layout else []
    return irctl("solve", g, "--progress", "plain", "--cache-dir", tmp / "cache", *grants, *args, timeout=120)


def test_ungranted_local_context_is_refused(tmp_path, busybox_layout):
    doc = dump_document(b.build_document({"default": base().copy(b.local("home"), "/.ssh", "/loot")}))
    r = solve(tmp_path, doc, layout=busybox_layout)
    assert r.code != 0 and "local directory 'home', which was not granted" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_ungranted_oci_layout_is_refused(tmp_path):
    doc = dump_document(b.build_document({"default": base().run(["true"])}))
    r = solve(tmp_path, doc)
    assert r.code != 0 and "OCI layout 'busybox', which was not granted" in r.stderr, r.stderr


def test_insecure_without_entitlement_is_refused(tmp_path, busybox_layout):
    doc = dump_document(b.build_document({"default": base().run(["true"], security="insecure")}))
    r = solve(tmp_path, doc, layout=busybox_layout)
    assert r.code != 0 and "security=insecure" in r.stderr and "not allowed" in r.stderr, r.stderr
    ok = solve(tmp_path, doc, "--allow", "security.insecure", layout=busybox_layout)
    assert ok.code == 0, ok.stderr


@pytest.mark.parametrize("field,value,message", [
    ("target", "/mnt/../../etc", "mounts[1].target"),
    ("target", "etc", "mounts[1].target"),
    ("target", "//etc", "mounts[1].target"),
    ("selector", "../../..", "mounts[1].selector"),
    ("selector", "a/../../b", "mounts[1].selector"),
])
def test_mount_paths_with_dotdot_are_refused(tmp_path, busybox_layout, field, value, message):
    raw = raw_of(base().run(["true"], mounts=[b.bind("/mnt", base(), selector="etc")]))
    the_op(raw, "exec")["exec"]["mounts"][1][field] = value
    r = solve(tmp_path, encode(redigest(raw)), layout=busybox_layout)
    assert r.code == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("field,value,message", [
    ("src_path", "../../../etc/passwd", "copy.src_path"),
    ("dest", "/../../tmp/pwned", "copy.dest"),
    ("dest", "relative/x", "copy.dest"),
])
def test_copy_paths_with_dotdot_are_refused(tmp_path, busybox_layout, field, value, message):
    raw = raw_of(base().copy(base(), "/etc/passwd", "/x"))
    the_op(raw, "file")["file"]["actions"][0]["copy"][field] = value
    r = solve(tmp_path, encode(redigest(raw)), layout=busybox_layout)
    assert r.code == 2 and message in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["mkfile", "mkdir", "rm"])
def test_file_action_paths_with_dotdot_are_refused(tmp_path, busybox_layout, kind):
    st = {"mkfile": lambda s: s.mkfile("/x", b"x"), "mkdir": lambda s: s.mkdir("/x"),
          "rm": lambda s: s.file([b.ops.FileAction(rm=b.ops.RmAction("/x"))])}[kind](base())
    raw = raw_of(st)
    the_op(raw, "file")["file"]["actions"][0][kind]["path"] = "/../../../tmp/irctl-pwned"
    r = solve(tmp_path, encode(redigest(raw)), layout=busybox_layout)
    assert r.code == 2 and f"{kind}.path" in r.stderr, r.stderr


def test_hostile_but_valid_paths_stay_in_the_root(tmp_path, busybox_layout):
    """Valid graphs that try to reach the host through symlinks, cwd, cache ids and patterns."""
    mark = f"irctl-pwned-{uuid.uuid4().hex}"
    host = Path("/tmp") / mark
    st = (base().symlink("/tmp", "/hostlink").mkfile(f"/hostlink/{mark}", b"x")
          .symlink(f"../../../../../../tmp/{mark}-rel", "/rel").mkfile("/rel", b"y")
          .run(["sh", "-c", f"touch {mark}-cwd; ls /proc/1/root/ >/dev/null"], cwd=f"/proc/1/root/tmp")
          .run(["sh", "-c", f"touch /c/{mark}-cache"], mounts=[b.cache("/c", id=f"../../../../tmp/{mark}-cacheid")]))
    st = st.copy(b.local("context", include=["../../../etc/passwd", "/etc/shadow"]), "/", "/ctx/")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    r = solve(tmp_path, dump_document(b.build_document({"default": st})), "--local", f"context={ctx}",
              layout=busybox_layout)
    assert r.code == 0, r.stderr
    leaked = sorted(p for p in Path("/tmp").glob(f"{mark}*")) + sorted(Path("/").glob(f"{mark}*"))
    assert leaked == [], leaked
    assert not host.exists()
