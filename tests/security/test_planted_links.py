"""A RUN step plants symlinks where irctl will look after it (the parents of its mount points, a
whiteout's parent, a cache mount, a stage another stage copies from) pointing at a host directory
full of empty files and dirs — exactly what mount-stub cleanup removes. Whatever the step does, the
host's files survive and the build either succeeds with the link kept as a link or fails with one
clear line."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support.cli import irctl
from tests.security.conftest import write_ctx

pytestmark = pytest.mark.e2e


def _victim(base: Path) -> Path:
    """A host dir shaped like the stubs a step's mounts leave: empty dirs and empty files, nested."""
    v = base / f"victim-{uuid.uuid4().hex[:8]}"
    for d in ("b/c", "a/b/c", "g/a/b/c", "t", "tmp"):
        (v / d).mkdir(parents=True, exist_ok=True)
    for f in ("b/secret", "a/b/secret", "t/c", "f", "marker-empty"):
        (v / f).touch()
    (v / "marker").write_text("keep me")
    return v


def _snapshot(v: Path) -> list[str]:
    return sorted(str(p.relative_to(v)) for p in v.rglob("*"))


def _up(n: int = 30) -> str:
    return "../" * n


def _cases(v: Path) -> dict[str, str]:
    """name -> the body of a Dockerfile after FROM busybox (each plants links, then its mounts go away)."""
    rel = _up() + str(v).lstrip("/")
    return {
        # the mount target's parent replaced by a link to the host (the audit's attack)
        "parent": f"RUN --mount=type=tmpfs,target=/a/b/c mv /a /moved && ln -s {v} /a\n",
        "parent-file-stub": f"RUN --mount=type=bind,source=Dockerfile,target=/a/b/secret "
                            f"mv /a /moved && ln -s {v} /a\n",
        "grandparent": f"RUN --mount=type=tmpfs,target=/g/a/b/c mv /g /moved && ln -s {v} /g\n",
        "relative-climb": f"RUN --mount=type=tmpfs,target=/a/b/c mv /a /moved && ln -s {rel} /a\n",
        "dir-to-root": f"RUN --mount=type=tmpfs,target=/r/{str(v).lstrip('/')}/b/c mv /r /moved && ln -s / /r\n",
        "target-itself": f"RUN --mount=type=tmpfs,target=/t/c mv /t /moved && mkdir /t && ln -s {v}/t/c /t/c\n",
        "target-file-itself": f"RUN --mount=type=bind,source=Dockerfile,target=/t/c "
                              f"mv /t /moved && mkdir /t && ln -s {v}/f /t/c\n",
        "standard-mounts": f"RUN mv /etc /etc2 && ln -s {v} /etc && mv /proc /p2 ; ln -s {v} /proc ; true\n",
        "whiteout-parent": f"RUN mkdir /w && touch /w/f /w/g\nRUN rm /w/f\nRUN rm -rf /w && ln -s {v} /w\n",
        "copy-from-stage": f"RUN ln -s {v} /out && ln -s {rel} /out2\n"
                           f"FROM busybox\nCOPY --from=0 /out/ /x/\nCOPY --from=0 /out2/ /y/\n",
        "cache-mount": f"RUN --mount=type=cache,target=/c ln -s {v} /c/l && ln -s / /c/root && "
                       f"ln -s {rel} /c/rel && mkdir -p /c/d/e && rmdir /c/d/e && ln -s {v}/b /c/d/e\n"
                       f"RUN --mount=type=cache,target=/c ls /c\n",
        "workdir": f"WORKDIR /wd\nRUN --mount=type=tmpfs,target=/wd/b/c mv /wd/b /moved && ln -s {v}/b /wd/b\n",
    }


@pytest.mark.parametrize("case", sorted(_cases(Path("/x"))))
@pytest.mark.parametrize("output", ["local", "oci"])
def test_planted_links_leave_the_host_alone(tmp_path, layout_ctx, case, output):
    v = _victim(tmp_path)
    before = _snapshot(v)
    body = _cases(v)[case]
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\n" + body})
    out = tmp_path / "out"
    dest = f"type=local,dest={out}" if output == "local" else f"type=oci,dest={tmp_path / 'img.tar'}"
    cache = tmp_path / "cache"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", dest,
              env={"IRCTL_CACHE_DIR": str(cache)})
    assert _snapshot(v) == before, f"{case}: the host dir changed: {r.stderr[-2000:]}"
    assert (v / "marker").read_text() == "keep me"
    assert "Traceback" not in r.stderr, r.stderr
    if case == "copy-from-stage":  # the links resolve inside the stage's root, where nothing is
        assert r.code != 0 and "file not found in source: /out" in r.stderr, r.stderr[-2000:]
        return
    assert r.code == 0, r.stderr[-2000:]
    if output == "local":
        for name in ("a", "g", "r", "wd/b", "w"):
            p = out / name
            if case.startswith(("parent", "grandparent", "dir-to-root", "relative", "workdir", "whiteout")) \
                    and os.path.lexists(p) and name == {"parent": "a", "parent-file-stub": "a", "grandparent": "g",
                                                        "relative-climb": "a", "dir-to-root": "r", "workdir": "wd/b",
                                                        "whiteout-parent": "w"}[case]:
                assert p.is_symlink(), f"{case}: {name} should stay a link in the image"
        # nothing of the host's victim dir was copied into the image through a planted link
        assert not any(q.name == "marker" for q in out.rglob("*") if not q.is_symlink()), case
    if case == "cache-mount":
        r = irctl("cache", "prune", "--all", env={"IRCTL_CACHE_DIR": str(cache)})
        assert r.code == 0, r.stderr
        assert _snapshot(v) == before


def test_stub_cleanup_never_follows_a_planted_parent(tmp_path):
    """The unit under the e2e cases: stubs reached through a link in the upper dir are left alone."""
    from backend.fs.mountpoints import remove_mount_stubs

    v = _victim(tmp_path)
    before = _snapshot(v)
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (upper / "moved" / "b" / "c").mkdir(parents=True)
    os.symlink(v, upper / "a")
    os.symlink(_up() + str(v).lstrip("/"), upper / "g")
    os.symlink("/", upper / "r")
    removed = remove_mount_stubs(upper, [lower], ["/a/b/c", "/a/b/secret", "/g/b/c", "/r" + str(v) + "/b/c",
                                                  "/a", "/moved/b/c"])
    assert _snapshot(v) == before
    assert removed == ["moved/b/c", "moved/b", "moved"]
    assert (upper / "a").is_symlink() and (upper / "g").is_symlink() and (upper / "r").is_symlink()


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "nofollow-walk"])
def test_open_beneath_refuses_a_link_at_every_level(tmp_path, monkeypatch, openat2):
    """The primitive under every lookup in a step's output: any symlink on the path is an error, with
    openat2 and with the O_NOFOLLOW walk used where openat2 is missing."""
    import errno

    from backend.fs import safefs

    if not openat2:
        monkeypatch.setattr(safefs, "_openat2_works", False)
    v = _victim(tmp_path)
    root = tmp_path / "root"
    (root / "a" / "b" / "c").mkdir(parents=True)
    os.symlink(v, root / "abs")
    os.symlink("../../..", root / "a" / "rel")
    os.symlink("/", root / "a" / "b" / "slash")
    os.symlink("c", root / "a" / "b" / "inside")  # even a link that stays inside is not followed
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(safefs.open_beneath(fd, "a/b/c"))
        for path in ("abs", "abs/b", "a/rel", "a/rel/tmp", "a/b/slash", "a/b/slash/tmp", "a/b/inside"):
            with pytest.raises(OSError) as e:
                os.close(safefs.open_beneath(fd, path))
            assert e.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV), path  # never followed
            assert safefs.open_parent(fd, path + "/x") is None, path
        with pytest.raises(safefs.TreeError):
            safefs.open_beneath(fd, "a/../../x")
    finally:
        os.close(fd)
