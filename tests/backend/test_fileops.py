"""backend.fileops.actions: COPY/ADD semantics, mkfile/mkdir/rm/symlink, hostile sources, destinations and archives.

Each test asserts the resulting tree (types, modes, owners, contents, link targets).  Ownership tests
need root (the VM runs the suite as root)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from backend.fileops.actions import apply_actions
from backend.fileops.chmod import ChmodError, parse_chmod
from backend.fileops.copy import FileOpError, SourceView
from backend.fileops.destroot import resolve_owner
from backend.fileops.unpack import UnpackLimits
from ir.ops import CopyAction, FileAction, MkdirAction, MkfileAction, Owner, RmAction, SymlinkAction

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="file ops tests chown: run as root")

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:1001:\nwww:x:33:\n"


def tree(root: Path) -> dict[str, tuple]:
    """rel → (type, perm, uid, gid, content-or-target) for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, st.st_uid, st.st_gid, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, None)
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, Path(p).read_bytes())
    return out


def sub(t: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in t.items() if k.startswith(prefix + "/")}


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """A build context: files with odd owners and modes, a dir tree, a link out to /etc/passwd."""
    c = tmp_path / "ctx"
    (c / "dir" / "sub").mkdir(parents=True)
    (c / "a.txt").write_bytes(b"A")
    (c / "b.txt").write_bytes(b"B")
    (c / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(c / "run.sh", 0o750)
    (c / "dir" / "one.txt").write_bytes(b"1")
    (c / "dir" / "notes.md").write_bytes(b"md")
    (c / "dir" / "sub" / "two.txt").write_bytes(b"2")
    os.chmod(c / "dir" / "sub", 0o700)
    os.symlink("/etc/passwd", c / "passwd-link")
    os.symlink("dir", c / "dirlink")
    for p in c.rglob("*"):
        os.lchown(p, 4242, 4343)
    return c


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A destination rootfs with passwd/group and an `etc` reachable through a symlink."""
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text(PASSWD)
    (r / "etc" / "group").write_text(GROUP)
    os.symlink("/etc", r / "cfg")
    return r


def cp(src_path: str, dest: str, **kw) -> FileAction:
    kw.setdefault("create_dest_path", True)
    return FileAction(copy=CopyAction(src=kw.pop("src", 0), src_path=src_path, dest=dest, **kw))


def run(root: Path, *actions: FileAction, sources=None) -> dict:
    apply_actions(root, list(actions), sources)
    return tree(root)


# ---------------------------------------------------------------------------------------------- basic shapes


def test_file_to_dir_with_trailing_slash_and_rename(ctx, root):
    t = run(root, cp("/a.txt", "/app/"), cp("b.txt", "/app/renamed"), sources=[SourceView.context(ctx)])
    assert t["app"] == ("d", 0o755, 0, 0, None)
    assert t["app/a.txt"] == ("f", 0o644, 0, 0, b"A")  # context owners never reach the image
    assert t["app/renamed"] == ("f", 0o644, 0, 0, b"B")


def test_file_into_existing_dir_without_slash(ctx, root):
    (root / "app").mkdir()
    t = run(root, cp("/a.txt", "/app"), sources=[SourceView.context(ctx)])
    assert t["app/a.txt"][4] == b"A"


def test_directory_contents_only_creates_dest_0755(ctx, root):
    t = run(root, cp("/dir", "/dst", contents_only=True), sources=[SourceView.context(ctx)])
    assert t["dst"] == ("d", 0o755, 0, 0, None)
    assert sub(t, "dst") == {
        "one.txt": ("f", 0o644, 0, 0, b"1"), "notes.md": ("f", 0o644, 0, 0, b"md"),
        "sub": ("d", 0o700, 0, 0, None), "sub/two.txt": ("f", 0o644, 0, 0, b"2")}


def test_directory_contents_merge_keeps_existing_top_metadata(ctx, root):
    (root / "dst").mkdir(mode=0o711)
    os.chmod(root / "dst", 0o711)
    os.chown(root / "dst", 7, 8)
    (root / "dst" / "old").write_text("keep")
    t = run(root, cp("/dir/", "/dst/", contents_only=True), sources=[SourceView.context(ctx)])
    assert t["dst"] == ("d", 0o711, 7, 8, None)
    assert t["dst/old"][4] == b"keep" and t["dst/sub/two.txt"][4] == b"2"


def test_directory_without_contents_only(ctx, root):
    (root / "existing").mkdir()
    t = run(root, cp("/dir", "/existing"), cp("/dir", "/fresh"), sources=[SourceView.context(ctx)])
    assert t["existing/dir/sub/two.txt"][4] == b"2"  # onto an existing dir: dest/<name>
    assert t["fresh/one.txt"][4] == b"1"  # onto a missing path: the copy is named dest
    assert t["fresh"][1] == stat.S_IMODE(os.stat(ctx / "dir").st_mode)


def test_create_dest_path_off_requires_parent(ctx, root):
    with pytest.raises(FileOpError, match="does not exist"):
        apply_actions(root, [cp("/a.txt", "/nope/x", create_dest_path=False)], [SourceView.context(ctx)])
    (root / "yes").mkdir()
    t = run(root, cp("/a.txt", "/yes/x", create_dest_path=False), sources=[SourceView.context(ctx)])
    assert t["yes/x"][4] == b"A"


def test_file_replaces_file_and_symlink_but_not_directory(ctx, root):
    (root / "app").mkdir()
    (root / "app" / "a.txt").write_text("old")
    os.symlink("/etc/passwd", root / "app" / "b.txt")
    t = run(root, cp("/a.txt", "/app/"), cp("/b.txt", "/app/"), sources=[SourceView.context(ctx)])
    assert t["app/a.txt"][4] == b"A"
    assert t["app/b.txt"] == ("f", 0o644, 0, 0, b"B")  # the link was replaced, not written through
    assert t["etc/passwd"][4] == PASSWD.encode()
    (root / "app" / "one.txt").mkdir()  # the tree copy brings a file where the image has a dir
    with pytest.raises(FileOpError, match="cannot replace directory /app/one.txt with a file"):
        apply_actions(root, [cp("/dir", "/app", contents_only=True)], [SourceView.context(ctx)])


def test_directory_onto_file_fails(ctx, root):
    (root / "d").mkdir()
    (root / "d" / "sub").write_text("file")
    with pytest.raises(FileOpError, match="cannot copy to non-directory: /d/sub"):
        apply_actions(root, [cp("/dir", "/d", contents_only=True)], [SourceView.context(ctx)])


def test_missing_source_error_is_user_facing(ctx, root):
    with pytest.raises(FileOpError) as e:
        apply_actions(root, [cp("missing.txt", "/")], [SourceView.context(ctx)])
    assert str(e.value) == "COPY failed: file not found in build context: missing.txt"
    stage = SourceView(ctx, label="stage build")
    with pytest.raises(FileOpError, match="file not found in stage build: /nope"):
        apply_actions(root, [cp("/nope", "/")], [stage])


def test_missing_input_index(ctx, root):
    with pytest.raises(FileOpError, match="input 3 does not exist"):
        apply_actions(root, [cp("/a.txt", "/", src=3)], [SourceView.context(ctx)])


# ---------------------------------------------------------------------------------------------- wildcards


def test_wildcards(ctx, root):
    t = run(root, cp("/*.txt", "/w/", allow_wildcard=True), cp("/d?r", "/d/", allow_wildcard=True, contents_only=True),
            cp("/[a]*", "/cls/", allow_wildcard=True), sources=[SourceView.context(ctx)])
    assert sorted(sub(t, "w")) == ["a.txt", "b.txt"]
    assert sub(t, "d")["sub/two.txt"][4] == b"2" and "one.txt" in sub(t, "d")
    assert sorted(sub(t, "cls")) == ["a.txt"]


def test_wildcard_per_component_and_dir_not_descended(ctx, root):
    t = run(root, cp("/*/*.txt", "/w/", allow_wildcard=True), sources=[SourceView.context(ctx)])
    assert sorted(sub(t, "w")) == ["one.txt"]  # `*` does not cross `/`; dirlink is not followed


def test_wildcard_without_allow_is_literal(ctx, root):
    (ctx / "[x].txt").write_bytes(b"lit")
    t = run(root, cp("/[x].txt", "/l/"), sources=[SourceView.context(ctx)])
    assert t["l/[x].txt"][4] == b"lit"


def test_wildcard_nothing_matches(ctx, root):
    with pytest.raises(FileOpError, match=r"file not found in build context: \*.nothing"):
        apply_actions(root, [cp("*.nothing", "/w/", allow_wildcard=True)], [SourceView.context(ctx)])
    before = tree(root)
    assert run(root, cp("*.nothing", "/w/", allow_wildcard=True, allow_empty_wildcard=True),
               sources=[SourceView.context(ctx)]) == before


def test_several_matches_onto_a_file_dest_replace_one_another(ctx, root):
    """BuildKit copies each match in turn onto the destination: the last file wins (checked
    against the local BuildKit); irctl builds it too, and warns."""
    warnings: list[str] = []
    apply_actions(root, [cp("/*.txt", "/file", allow_wildcard=True)], [SourceView.context(ctx)], warn=warnings.append)
    assert tree(root)["file"][:2] == ("f", 0o644) and tree(root)["file"][4] == b"B"
    assert len(warnings) == 1 and "/*.txt matches 2 paths" in warnings[0] and "ends up as b.txt" in warnings[0]
    t = run(root, cp("/a*.txt", "/single", allow_wildcard=True), sources=[SourceView.context(ctx)])
    assert t["single"][4] == b"A"  # one match: a file dest, and nothing to warn about
    (ctx / "a.d").mkdir()
    (ctx / "a.d" / "in").write_bytes(b"I")
    warnings.clear()
    t = run(root, cp("/a*", "/mixed", allow_wildcard=True), sources=[SourceView.context(ctx)])
    assert t["mixed"][0] == "d" and t["mixed/in"][4] == b"I" and t["mixed/a.txt"][4] == b"A"  # dir first, file into it
    apply_actions(root, [cp("/[ab]*", "/w2", allow_wildcard=True)], [SourceView.context(ctx)], warn=warnings.append)
    assert "ends up as" not in warnings[0]  # with a directory among the matches, no file simply "wins"
    with pytest.raises(FileOpError, match="/w3.*not a directory"):  # a file, then a dir onto it: an error, as BuildKit
        apply_actions(root, [cp("/b.txt", "/w3"), cp("/[a]*", "/w3", allow_wildcard=True)], [SourceView.context(ctx)])


# ---------------------------------------------------------------------------------------------- owners, modes, times


def test_chown_by_name_id_and_group(ctx, root):
    src = [SourceView.context(ctx)]
    t = run(root, cp("/a.txt", "/n/", owner=Owner("app")), cp("/a.txt", "/i/", owner=Owner("1234")),
            cp("/a.txt", "/g/", owner=Owner("app", "staff")), cp("/a.txt", "/ig/", owner=Owner("5", "6")),
            sources=src)
    assert t["n/a.txt"][2:4] == (1000, 1001)  # primary group from passwd
    assert t["i/a.txt"][2:4] == (1234, 1234)  # BuildKit: a numeric user alone gives gid = uid
    assert t["g/a.txt"][2:4] == (1000, 50)
    assert t["ig/a.txt"][2:4] == (5, 6)
    assert t["n"][2:4] == (1000, 1001)  # created parents belong to the owner (fsutil MkdirAll)
    with pytest.raises(FileOpError, match="unable to find user nobody"):
        apply_actions(root, [cp("/a.txt", "/x/", owner=Owner("nobody"))], src)
    with pytest.raises(FileOpError, match="unable to find group nogroup"):
        apply_actions(root, [cp("/a.txt", "/x/", owner=Owner("app", "nogroup"))], src)
    # digits to str.isdigit but not to int(), and ids past 2**31-1: errors, never a traceback
    for owner, message in [(Owner("\u00b2"), "unable to find user"), (Owner("1", "\u00b2"), "unable to find group"),
                           (Owner("9" * 5000), "out of range"), (Owner("1", "99999999999"), "out of range")]:
        with pytest.raises(FileOpError, match=message):
            apply_actions(root, [cp("/a.txt", "/x/", owner=owner)], src)


def test_owner_resolved_in_destination_not_host(ctx, root, tmp_path):
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nsvc:x:77:88::/:/bin/sh\n")
    assert resolve_owner(root, Owner("svc")) == (77, 88)
    # an /etc/passwd that is a symlink to the host's file is not followed out of the root
    (root / "etc" / "passwd").unlink()
    os.symlink("/etc/passwd", root / "etc" / "passwd")
    with pytest.raises(Exception):
        resolve_owner(root, Owner("svc"))


def test_stage_copy_preserves_owners_context_resets(ctx, root):
    t = run(root, cp("/dir", "/stage", contents_only=True, src=0), cp("/dir", "/local", contents_only=True, src=1),
            sources=[SourceView(ctx), SourceView.context(ctx)])
    assert t["stage/sub/two.txt"][2:4] == (4242, 4343) and t["stage/sub"][2:4] == (4242, 4343)
    assert t["local/sub/two.txt"][2:4] == (0, 0) and t["local/sub"][2:4] == (0, 0)
    assert t["stage"][2:4] == (0, 0)  # created by MkdirAll, not copied


def test_chmod_octal_applies_to_files_and_dirs_not_links(ctx, root):
    t = run(root, cp("/dir", "/o", contents_only=True, chmod="0640"), cp("/dirlink", "/lnk/", chmod="0600"),
            sources=[SourceView.context(ctx)])
    assert t["o/one.txt"][1] == 0o640 and t["o/sub"][1] == 0o640 and t["o/sub/two.txt"][1] == 0o640
    assert t["lnk/dirlink"][0] == "l"


def test_chmod_symbolic(ctx, root):
    t = run(root, cp("/", "/s", contents_only=True, chmod="a=rX"), cp("/run.sh", "/u/", chmod="u+x,g-w,o="),
            sources=[SourceView.context(ctx)])
    assert t["s/a.txt"][1] == 0o444 and t["s/run.sh"][1] == 0o555 and t["s/dir/sub"][1] == 0o555
    assert t["u/run.sh"][1] == 0o750


@pytest.mark.parametrize("spec,old,is_dir,new", [
    ("0755", 0o600, False, 0o755), ("4755", 0o600, False, 0o4755), ("755", 0o777, True, 0o755),
    ("u+x", 0o644, False, 0o744), ("g-w", 0o664, False, 0o644), ("o=", 0o777, False, 0o770),
    ("a=rX", 0o640, False, 0o444), ("a=rX", 0o740, False, 0o555), ("a=rX", 0o700, True, 0o555),
    ("+x", 0o644, False, 0o755), ("u=rwx,go=rx", 0o000, False, 0o755), ("go=u", 0o640, False, 0o666),
    ("u+s", 0o755, False, 0o4755), ("g+s", 0o755, True, 0o2755), ("+t", 0o777, True, 0o1777),
    ("a-x", 0o755, False, 0o644), ("u+rw,g+r", 0o000, False, 0o640), ("ug+w,o-rwx", 0o755, False, 0o770),
    ("=r", 0o777, False, 0o444), ("u=", 0o4755, False, 0o055), ("a+X", 0o644, False, 0o644),
])
def test_chmod_table(spec, old, is_dir, new):
    assert parse_chmod(spec).apply(old | (stat.S_IFDIR if is_dir else stat.S_IFREG), is_dir) == new


@pytest.mark.parametrize("bad", ["0788", "77777", "u+q", "z=r", "u+x,", "rwx"])
def test_chmod_rejects(bad):
    with pytest.raises(ChmodError):
        parse_chmod(bad)


def test_timestamp_sets_mtimes_everywhere(ctx, root):
    t0 = 1_000_000_000
    apply_actions(root, [cp("/dir", "/deep/er/dst", contents_only=True, timestamp=t0),
                         cp("/dirlink", "/deep2/", timestamp=t0)], [SourceView.context(ctx)])
    for rel in ("deep", "deep/er", "deep/er/dst", "deep/er/dst/sub", "deep/er/dst/sub/two.txt", "deep2",
                "deep2/dirlink"):
        assert os.lstat(root / rel).st_mtime == t0, rel


def test_mtimes_kept_without_timestamp(ctx, root):
    os.utime(ctx / "a.txt", (5, 12345))
    apply_actions(root, [cp("/a.txt", "/k/")], [SourceView.context(ctx)])
    assert os.stat(root / "k" / "a.txt").st_mtime == 12345


def test_hard_links_and_xattrs_preserved(ctx, root):
    os.link(ctx / "a.txt", ctx / "dir" / "hard")
    os.setxattr(ctx / "dir" / "one.txt", "user.note", b"hi")
    apply_actions(root, [cp("/", "/h", contents_only=True)], [SourceView.context(ctx)])
    assert os.stat(root / "h" / "a.txt").st_ino == os.stat(root / "h" / "dir" / "hard").st_ino
    assert os.stat(root / "h" / "a.txt").st_ino != os.stat(ctx / "a.txt").st_ino
    assert os.getxattr(root / "h" / "dir" / "one.txt", "user.note") == b"hi"


# ---------------------------------------------------------------------------------------------- include / exclude / parents


def test_exclude_and_include(ctx, root):
    t = run(root, cp("/dir", "/e", contents_only=True, exclude=("*.md", "sub")),
            cp("/dir", "/i", contents_only=True, include=("sub/*.txt",)),
            cp("/dir", "/x", contents_only=True, exclude=("*", "!sub/two.txt")),
            sources=[SourceView.context(ctx)])
    assert sorted(sub(t, "e")) == ["one.txt"]
    assert sorted(sub(t, "i")) == ["sub", "sub/two.txt"]
    assert sub(t, "i")["sub"][1] == 0o700  # an implied parent keeps the source dir's mode
    assert sorted(sub(t, "x")) == ["sub", "sub/two.txt"]


def test_exclude_applies_to_wildcard_matches(ctx, root):
    t = run(root, cp("/*", "/w/", allow_wildcard=True, exclude=("*.txt", "*link")), sources=[SourceView.context(ctx)])
    assert sorted(k for k in sub(t, "w") if "/" not in k) == ["dir", "run.sh"]


def test_parents(ctx, root):
    t = run(root, cp("dir/sub/two.txt", "/p/", parents=True), cp("dir/./sub/two.txt", "/q/", parents=True),
            cp("*/*.md", "/r/", parents=True, allow_wildcard=True), cp("dir", "/s/", parents=True),
            sources=[SourceView.context(ctx)])
    assert sorted(sub(t, "p")) == ["dir", "dir/sub", "dir/sub/two.txt"]
    assert sub(t, "p")["dir/sub"][1] == 0o700
    assert sorted(sub(t, "q")) == ["sub", "sub/two.txt"]
    assert sorted(sub(t, "r")) == ["dir", "dir/notes.md"]
    assert "dir/sub/two.txt" in sub(t, "s") and "a.txt" not in sub(t, "s")
    with pytest.raises(FileOpError, match="not found"):
        apply_actions(root, [cp("dir/nothing", "/z/", parents=True)], [SourceView.context(ctx)])


def test_local_source_filters_hide_paths(ctx, root):
    view = SourceView.context(ctx, exclude=("*.txt", "dir/sub", "!dir/one.txt"))
    t = run(root, cp("/", "/all", contents_only=True), sources=[view])
    assert sorted(sub(t, "all")) == ["dir", "dir/notes.md", "dir/one.txt", "dirlink", "passwd-link", "run.sh"]
    with pytest.raises(FileOpError, match="not found"):
        apply_actions(root, [cp("/a.txt", "/x/")], [view])
    inc = SourceView.context(ctx, include=("dir/sub",))
    t = run(root, cp("/", "/inc", contents_only=True), sources=[inc])
    assert sorted(sub(t, "inc")) == ["dir", "dir/sub", "dir/sub/two.txt"]


# ---------------------------------------------------------------------------------------------- hostile paths


def test_source_dotdot_stays_in_root(ctx, root, tmp_path):
    (tmp_path / "secret").write_text("host secret")
    with pytest.raises(FileOpError, match="not found"):
        apply_actions(root, [cp("../secret", "/x/")], [SourceView.context(ctx)])
    t = run(root, cp("../../a.txt", "/y/"), sources=[SourceView.context(ctx)])
    assert t["y/a.txt"][4] == b"A"  # `..` stops at the context root


def test_symlink_to_host_file_is_copied_as_link(ctx, root):
    t = run(root, cp("/passwd-link", "/l/"), sources=[SourceView.context(ctx)])
    assert t["l/passwd-link"] == ("l", 0, 0, 0, "/etc/passwd")


def test_following_symlink_stays_in_source_root(ctx, root):
    with pytest.raises(FileOpError, match="not found"):  # /etc/passwd inside the context: absent
        apply_actions(root, [cp("/passwd-link", "/f/", follow_symlinks=True)], [SourceView.context(ctx)])
    (ctx / "etc").mkdir()
    (ctx / "etc" / "passwd").write_text("context's own")
    t = run(root, cp("/passwd-link", "/f/", follow_symlinks=True), sources=[SourceView.context(ctx)])
    assert t["f/passwd-link"] == ("f", 0o644, 0, 0, b"context's own")
    t = run(root, cp("/dirlink", "/g", follow_symlinks=True, contents_only=True), sources=[SourceView.context(ctx)])
    assert t["g/one.txt"][4] == b"1"
    os.symlink("../../../../../../etc", ctx / "up")
    with pytest.raises(FileOpError, match="not found"):
        apply_actions(root, [cp("/up/shadow", "/h/")], [SourceView.context(ctx)])


def test_dest_through_image_symlink_stays_in_root(ctx, root):
    t = run(root, cp("/a.txt", "/cfg/"), sources=[SourceView.context(ctx)])
    assert t["etc/a.txt"][4] == b"A"  # /cfg -> /etc means root/etc
    assert not Path("/etc/a.txt").exists() or Path("/etc/a.txt").read_bytes() != b"A"
    os.symlink("../../../../../../../tmp", root / "esc")
    t = run(root, cp("/b.txt", "/esc/"), sources=[SourceView.context(ctx)])
    assert t["tmp/b.txt"][4] == b"B"


def test_symlink_loop_is_an_error(ctx, root):
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    with pytest.raises(FileOpError, match="too many levels of symbolic links"):
        apply_actions(root, [cp("/a.txt", "/loop1/")], [SourceView.context(ctx)])


# ---------------------------------------------------------------------------------------------- unpack


def make_tar(members, compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m.get("type", tarfile.REGTYPE)
            info.mode = m.get("mode", 0o644)
            info.uid, info.gid = m.get("uid", 0), m.get("gid", 0)
            info.mtime = m.get("mtime", 1_600_000_000)
            info.linkname = m.get("linkname", "")
            data = m.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    raw = buf.getvalue()
    return {"": lambda b: b, "gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
            "zst": lambda b: zstandard.ZstdCompressor().compress(b)}[compression](raw)


def add(name: str, dest: str, **kw) -> FileAction:
    return cp(name, dest, unpack=True, **kw)


@pytest.mark.parametrize("comp", ["", "gz", "bz2", "xz", "zst"])
def test_unpack_formats(ctx, root, comp):
    (ctx / "a.tar").write_bytes(make_tar([
        {"name": "top", "type": tarfile.DIRTYPE, "mode": 0o750, "uid": 5, "gid": 6},
        {"name": "top/f", "data": b"content", "mode": 0o600, "uid": 7, "gid": 8},
        {"name": "top/l", "type": tarfile.SYMTYPE, "linkname": "f"},
        {"name": "top/h", "type": tarfile.LNKTYPE, "linkname": "top/f", "mode": 0o600, "uid": 7, "gid": 8},
    ], comp))
    t = run(root, add("/a.tar", "/x/"), sources=[SourceView.context(ctx)])
    assert t["x/top"] == ("d", 0o750, 5, 6, None)
    assert t["x/top/f"] == ("f", 0o600, 7, 8, b"content")
    assert t["x/top/l"][0::4] == ("l", "f")
    assert os.stat(root / "x/top/h").st_ino == os.stat(root / "x/top/f").st_ino
    assert os.stat(root / "x/top").st_mtime == 1_600_000_000


def test_unpack_non_archive_is_copied(ctx, root):
    (ctx / "fake.tar.gz").write_bytes(b"\x1f\x8bnot really gzip")
    t = run(root, add("/fake.tar.gz", "/x/"), add("/a.txt", "/x/"), sources=[SourceView.context(ctx)])
    assert t["x/fake.tar.gz"][4] == b"\x1f\x8bnot really gzip" and t["x/a.txt"][4] == b"A"


def test_unpack_hostile_names(ctx, root):
    src = [SourceView.context(ctx)]
    (ctx / "up.tar").write_bytes(make_tar([{"name": "../escape", "data": b"x"}]))
    with pytest.raises(FileOpError, match="outside the destination"):
        apply_actions(root, [add("/up.tar", "/x/")], src)
    (ctx / "mid.tar").write_bytes(make_tar([{"name": "a/../../escape", "data": b"x"}]))
    with pytest.raises(FileOpError, match="outside the destination"):
        apply_actions(root, [add("/mid.tar", "/x/")], src)
    assert not (root / "escape").exists() and not (root.parent / "escape").exists()
    (ctx / "abs.tar").write_bytes(make_tar([{"name": "/etc/evil", "data": b"inside"}]))
    t = run(root, add("/abs.tar", "/x/"), sources=src)
    assert t["x/etc/evil"][4] == b"inside"  # absolute names land inside dest


def test_unpack_symlink_then_write_stays_inside(ctx, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    src = [SourceView.context(ctx)]
    (ctx / "rel.tar").write_bytes(make_tar([
        {"name": "link", "type": tarfile.SYMTYPE, "linkname": "../../../../../../../.." + str(outside)},
        {"name": "link/pwned", "data": b"x"},
    ]))
    with pytest.raises(FileOpError, match="points outside the destination"):
        apply_actions(root, [add("/rel.tar", "/x/")], src)
    (ctx / "abs.tar").write_bytes(make_tar([
        {"name": "link", "type": tarfile.SYMTYPE, "linkname": str(outside)},
        {"name": "link/pwned", "data": b"x"},
    ]))
    t = run(root, add("/abs.tar", "/y/"), sources=src)
    assert t["y" + str(outside) + "/pwned"][4] == b"x"  # an absolute target restarts at the destination
    # an image symlink already in the destination is resolved inside it too
    os.symlink(str(outside), root / "trap")
    (ctx / "t.tar").write_bytes(make_tar([{"name": "trap/pwned", "data": b"x"}]))
    t = run(root, add("/t.tar", "/"), sources=src)
    assert t[str(outside).lstrip("/") + "/pwned"][4] == b"x"
    assert list(outside.iterdir()) == []


def test_unpack_into_merged_usr_follows_image_symlink(ctx, root):
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    (ctx / "l.tar").write_bytes(make_tar([{"name": "lib/libx.so", "data": b"elf"}]))
    t = run(root, add("/l.tar", "/"), sources=[SourceView.context(ctx)])
    assert t["usr/lib/libx.so"][4] == b"elf" and t["lib"] == ("l", 0, 0, 0, "usr/lib")


def test_unpack_chown_overrides_archive_owners(ctx, root):
    (ctx / "o.tar").write_bytes(make_tar([{"name": "d", "type": tarfile.DIRTYPE, "uid": 5, "gid": 5},
                                          {"name": "d/f", "data": b"1", "uid": 7, "gid": 7}]))
    t = run(root, add("/o.tar", "/o/", owner=Owner("app")), sources=[SourceView.context(ctx)])
    assert t["o"][2:4] == t["o/d"][2:4] == t["o/d/f"][2:4] == (1000, 1001)


def test_unpack_hardlink_outside_refused(ctx, root):
    (ctx / "hl.tar").write_bytes(make_tar([{"name": "h", "type": tarfile.LNKTYPE, "linkname": "../../etc/passwd"}]))
    with pytest.raises(FileOpError, match="outside the destination"):
        apply_actions(root, [add("/hl.tar", "/x/")], [SourceView.context(ctx)])
    (ctx / "hs.tar").write_bytes(make_tar([
        {"name": "s", "type": tarfile.SYMTYPE, "linkname": "/etc"},
        {"name": "h", "type": tarfile.LNKTYPE, "linkname": "s/passwd"}]))
    with pytest.raises(FileOpError, match="hard link 'h' to missing"):  # s/passwd is y/etc/passwd: absent
        apply_actions(root, [add("/hs.tar", "/y/")], [SourceView.context(ctx)])
    assert os.stat(root / "etc" / "passwd").st_nlink == 1


def test_unpack_limits(ctx, root):
    (ctx / "many.tar").write_bytes(make_tar([{"name": f"f{i}", "data": b"x"} for i in range(20)]))
    with pytest.raises(FileOpError, match="more than 10 entries"):
        apply_actions(root, [add("/many.tar", "/x/")], [SourceView.context(ctx)], limits=UnpackLimits(max_entries=10))
    bomb = make_tar([{"name": "zeros", "data": b"\0" * (4 << 20)}], "gz")
    assert len(bomb) < 40_000
    (ctx / "bomb.tar.gz").write_bytes(bomb)
    with pytest.raises(FileOpError, match="more than 1048576 bytes"):
        apply_actions(root, [add("/bomb.tar.gz", "/y/")], [SourceView.context(ctx)],
                      limits=UnpackLimits(max_bytes=1 << 20))


# ---------------------------------------------------------------------------------------------- mkfile, mkdir, rm, symlink


def test_mkfile_mkdir_symlink(root):
    t = run(root,
            FileAction(mkdir=MkdirAction("/a/b/c", mode=0o750, parents=True, owner=Owner("app"), timestamp=1000)),
            FileAction(mkfile=MkfileAction("/a/b/c/f", b"data", mode=0o600, owner=Owner("web", "staff"), timestamp=2000)),
            FileAction(symlink=SymlinkAction("../b", "/a/b/c/l", owner=Owner("1000"), timestamp=3000)),
            FileAction(mkdir=MkdirAction("/a", mode=0o700)),  # exists: accepted, unchanged
            sources=[])
    assert t["a"] == ("d", 0o750, 1000, 1001, None) and t["a/b/c"] == ("d", 0o750, 1000, 1001, None)
    assert t["a/b/c/f"] == ("f", 0o600, 33, 50, b"data")
    assert t["a/b/c/l"] == ("l", 0, 1000, 1000, "../b")
    assert os.stat(root / "a/b/c/f").st_mtime == 2000 and os.lstat(root / "a/b/c/l").st_mtime == 3000
    assert os.stat(root / "a/b").st_mtime == 1000


def test_mkfile_mkdir_errors(root):
    with pytest.raises(FileOpError, match="parent directory of /no/f does not exist"):
        apply_actions(root, [FileAction(mkfile=MkfileAction("/no/f"))], [])
    with pytest.raises(FileOpError, match="parent directory of /no/d does not exist"):
        apply_actions(root, [FileAction(mkdir=MkdirAction("/no/d"))], [])
    (root / "file").write_text("x")
    with pytest.raises(FileOpError, match="exists and is not a directory"):
        apply_actions(root, [FileAction(mkdir=MkdirAction("/file"))], [])
    with pytest.raises(FileOpError, match="already exists"):
        apply_actions(root, [FileAction(symlink=SymlinkAction("x", "/file"))], [])


def test_mkfile_through_image_symlink_stays_inside(root):
    apply_actions(root, [FileAction(mkfile=MkfileAction("/cfg/new", b"n"))], [])
    assert (root / "etc" / "new").read_bytes() == b"n"


def test_rm(root):
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "x.log").write_text("1")
    (root / "d" / "y.log").write_text("2")
    (root / "keep").write_text("k")
    os.symlink("/keep", root / "lnk")
    t = run(root, FileAction(rm=RmAction("/d/*.log", allow_wildcard=True)), FileAction(rm=RmAction("/lnk")),
            FileAction(rm=RmAction("/ghost", allow_not_found=True)), sources=[])
    assert "d/x.log" not in t and "d/y.log" not in t and "d/e" in t
    assert "lnk" not in t and t["keep"][4] == b"k"  # removing a link leaves its target
    with pytest.raises(FileOpError, match="/ghost: no such file or directory"):
        apply_actions(root, [FileAction(rm=RmAction("/ghost"))], [])
    apply_actions(root, [FileAction(rm=RmAction("/cfg/group"))], [])
    assert not (root / "etc" / "group").exists() and Path("/etc/group").exists()
    t = run(root, FileAction(rm=RmAction("/d")), sources=[])
    assert not any(k == "d" or k.startswith("d/") for k in t)


def test_copy_within_one_tree_reads_first(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    t = run(root, cp("/a", "/a/b/c", contents_only=True), cp("/a/b/f", "/a/b/f"), sources=[SourceView(root)])
    assert t["a/b/f"][4] == b"x" and t["a/b/c/b/f"][4] == b"x"
    assert "a/b/c/b/c" not in t  # the new destination is not copied into itself


def test_merged_top_directory_takes_source_times_only(ctx, root):
    (root / "dst").mkdir()
    os.chmod(root / "dst", 0o711)
    os.utime(ctx / "dir", (50, 777))
    apply_actions(root, [cp("/dir", "/dst", contents_only=True)], [SourceView.context(ctx)])
    st = os.stat(root / "dst")
    assert st.st_mtime == 777 and stat.S_IMODE(st.st_mode) == 0o711  # fsutil copyFileTimestamp
    apply_actions(root, [cp("/dir", "/dst", contents_only=True, timestamp=99)], [SourceView.context(ctx)])
    assert os.stat(root / "dst").st_mtime == 99


def test_parents_wildcard_matching_nothing(ctx, root):
    with pytest.raises(FileOpError, match=r"file not found in build context: \*/\*.nothing"):
        apply_actions(root, [cp("*/*.nothing", "/p/", parents=True, allow_wildcard=True)], [SourceView.context(ctx)])
    before = tree(root)
    assert run(root, cp("*/*.nothing", "/p/", parents=True, allow_wildcard=True, allow_empty_wildcard=True),
               sources=[SourceView.context(ctx)]) == {**before, "p": ("d", 0o755, 0, 0, None)}


# ---------------------------------------------------------------------------------------------- property: writer fidelity

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from backend.fileops.context import scan_context  # noqa: E402
from backend.fileops.copy import DirTree  # noqa: E402
from backend.fileops.selection import plan_copy, walk_selection  # noqa: E402
from tests.support.random_trees import PATTERNS, build, trees  # noqa: E402


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=trees(), src=st.sampled_from(["/", "sub", "x"]), include=PATTERNS, exclude=PATTERNS,
       chmod=st.sampled_from(["", "0640", "a=rX", "u+w,go-w"]))
def test_copied_tree_is_exactly_the_selection(tmp_path_factory, items, src, include, exclude, chmod):
    """What the copy writes (types, modes, contents, link targets) is what the selection walk reads."""
    base = tmp_path_factory.mktemp("w")
    build(base / "ctx", items)
    root = base / "root"
    root.mkdir()
    action = CopyAction(src=0, src_path=src, dest="/out/", contents_only=True, create_dest_path=True,
                        include=tuple(p for p in include if not p.startswith("!")), exclude=tuple(exclude),
                        chmod=chmod)
    view = SourceView.context(base / "ctx")
    tree_ = DirTree(view)
    try:
        plan = plan_copy(tree_, action)
    except FileOpError:
        with pytest.raises(FileOpError):
            apply_actions(root, [FileAction(copy=action)], [view])
        return
    if not plan.selections or plan.selections[0].node.kind != "dir":
        return
    mode = parse_chmod(chmod)
    expected = {}
    for item in walk_selection(tree_, plan.selections[0], plan.include, plan.exclude):
        if not item.comps:
            continue
        n = item.node
        perm = stat.S_IMODE(n.mode)
        if mode is not None and n.kind != "symlink":
            perm = mode.apply(n.mode, n.kind == "dir")
        content = (base / "ctx" / item.rel).read_bytes() if n.kind == "file" else n.target
        expected[item.comps] = (n.kind, 0o777 if n.kind == "symlink" else perm, content)
    apply_actions(root, [FileAction(copy=action)], [view])
    out = scan_context(root / "out")
    got = {}
    for rel, e in out.entries.items():
        content = (root / "out" / rel).read_bytes() if e.type == "file" else e.target
        got[rel] = (e.type, e.mode, content)
    assert got == expected
    assert all(os.lstat(root / "out" / rel).st_uid == 0 for rel in got)
