"""COPY and ADD → one file op of copy actions (BuildKit's ``dispatchCopy``).

Sources: the build context (with the .dockerignore patterns), a stage or image (``--from``), a
named context; for ADD also URLs (an HTTP source, never unpacked unless ``--unpack``) and git
refs (``git@host:repo``, ``https://…/repo.git#ref:subdir``, kept ``.git`` with
``--keep-git-dir``); heredocs (``COPY <<EOF /f``) are files made on scratch.  Local sources copy a
directory's contents, follow a named symlink, accept wildcards that may match nothing, and create
the destination's parents; ADD unpacks local archives unless ``--unpack=false``.  The destination
is relative to WORKDIR and a trailing ``/`` makes it a directory.  ``--link`` builds the files on
scratch and merges them on top, so the layer does not depend on what is below.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from frontends.dockerfile import instructions as I
from frontends.dockerfile.expand import Expander, ExpandError
from frontends.dockerfile.stages import DockerfileError
from frontends.dockerfile.syntax import go_quote
from frontends.errors import Span
from ir import builder, ops

if TYPE_CHECKING:
    from frontends.dockerfile.convert import Converter, Dispatch

_OCTAL = re.compile(r"^[0-7]+$")
_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+(?:,[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+)*$")
_SCP = re.compile(r"^[\w.\-]+@[\w.\-]+:")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def dispatch_copy(conv: "Converter", d: "Dispatch", ins: I.Copy | I.Add, span: Span) -> None:
    is_add = isinstance(ins, I.Add)
    kw = "ADD" if is_add else "COPY"

    def flag_span(name: str) -> Span:
        f = ins.flag(name)
        return f.span if f else span

    sources = [conv.word(d, s, span) for s in ins.sources]
    dest_raw = conv.word(d, ins.dest, span)
    dest = dest_path(d.cwd, dest_raw)
    chown = conv.word(d, ins.chown, flag_span("chown")) if ins.chown else ""
    chmod = conv.word(d, ins.chmod, flag_span("chmod")) if ins.chmod else ""
    if chmod:
        chmod = check_chmod(chmod, flag_span("chmod"))
    exclude = tuple(conv.word(d, e, flag_span("exclude")) for e in ins.exclude)
    checksum = ""
    if is_add and ins.checksum:
        checksum = conv.word(d, ins.checksum, flag_span("checksum"))
        check_checksum(checksum, sources, flag_span("checksum"))
    parents = bool(getattr(ins, "parents", False))

    commit = [kw]
    if parents:
        commit.append("--parents")
    if chown:
        commit.append("--chown=" + chown)
    if ins.chmod:
        commit.append("--chmod=" + (ins.chmod if "$" not in ins.chmod else chmod))

    desc = conv.prefix(d, conv.describe(d, ins))
    meta = ops.OpMetadata(desc, d.info.group, (conv.location(span),))
    common = dict(owner=_owner(chown), chmod=chmod, exclude=exclude)
    actions: list[ops.FileAction] = []
    inputs: list[builder.State] = []

    def add(state: builder.State, src_path: str, **kw) -> None:
        inputs.append(state)
        actions.append(ops.FileAction(copy=ops.CopyAction(src=len(inputs) - 1, src_path=src_path, dest=dest,
                                                          create_dest_path=True, **common, **kw)))

    from_state = None
    if isinstance(ins, I.Copy) and ins.from_:
        from_state = conv.source_of(d, ins.from_, flag_span("from"))[0]

    for src in sources:
        commit.append(src)
        git = parse_git_ref(src)
        if git is not None and from_state is None:
            if not is_add:
                raise DockerfileError("source can't be a git ref for COPY", span)
            remote, ref, subdir = git
            st = builder.git(remote, ref, keep_git_dir=ins.keep_git_dir, subdir=subdir, meta=meta)
            add(st, "/", contents_only=True)
        elif is_http(src) and from_state is None:
            if not is_add:
                raise DockerfileError("source can't be a URL for COPY", span)
            name = url_filename(src)
            st = builder.http(src, checksum=checksum, filename=name, meta=meta)
            add(st, "/" + name, unpack=ins.unpack is True)
        else:
            patterns: tuple[str, ...] = ()
            path = src
            if parents:
                pivot, sep, pattern = src.partition("/./")
                if not sep:
                    pivot, pattern = "/", src
                patterns = (_clean("/" + pattern).lstrip("/"),)
                path = pivot
            if from_state is None and conv.ignored(src):
                conv.warn("CopyIgnoredFile", f"Attempting to {kw.capitalize()} file {go_quote(src)} that is "
                          "excluded by .dockerignore", span)
            add(from_state if from_state is not None else conv.context(), _clean("/" + path),
                follow_symlinks=True, contents_only=True, include=patterns,
                unpack=is_add and ins.unpack is not False, allow_wildcard=True, allow_empty_wildcard=True)

    raw = Expander("\\", skip_process_quotes=True)
    for content in ins.contents:
        commit.append("<<" + content.path)
        data = content.data
        if content.expand:
            try:
                data = raw.word(data, d.env)
            except ExpandError as e:
                raise DockerfileError(str(e), span) from None
        st = builder.scratch().file(
            [ops.FileAction(mkfile=ops.MkfileAction("/" + content.path, data.encode(), 0o644))],
            meta=ops.OpMetadata("[internal] preparing inline document", d.info.group, (conv.location(span),)),
            on_scratch=True)
        add(st, "/" + content.path)
    commit.append(dest_raw)

    if ins.link:
        layer = d.state.file(actions, inputs, meta=meta, on_scratch=True)
        head, sep, rest = desc.partition("] ")
        link_desc = f"{head}] LINK {rest}" if sep else "LINK " + desc
        d.state = d.state.merge([layer], meta=ops.OpMetadata(link_desc, d.info.group, meta.locations))
    else:
        d.state = d.state.file(actions, inputs, meta=meta)
    d.image.commit(" ".join(commit), layer=True, buildkit_suffix=True)


def dest_path(cwd: str, p: str) -> str:
    """BuildKit ``pathRelativeToWorkingDir``: absolute, cleaned, trailing ``/`` kept."""
    if p in (".", ""):
        p = "./"
    out = _clean(posixpath.join(cwd, p))
    if (p.endswith("/") or p.endswith("/.")) and out != "/":
        out += "/"
    return out


def _clean(path: str) -> str:
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/")


def _owner(chown: str) -> ops.Owner | None:
    if not chown:
        return None
    user, _, group = chown.partition(":")
    return ops.Owner(user, group)


def check_chmod(chmod: str, span: Span) -> str:
    if _OCTAL.match(chmod):
        mode = int(chmod, 8)
        if mode > 0o7777:
            raise DockerfileError(f"invalid chmod parameter: '{chmod}'. it should be octal string and "
                                  "between 0 and 07777", span)
        return f"{mode:04o}"
    if not _SYMBOLIC.match(chmod):
        raise DockerfileError(f'invalid --chmod value "{chmod}": expected an octal mode such as 0755 or a '
                              "symbolic mode such as u+rwx,go+rx", span)
    return chmod


def check_checksum(checksum: str, sources: list[str], span: Span) -> None:
    if len(sources) != 1:
        raise DockerfileError("checksum can't be specified for multiple sources", span)
    if not is_http(sources[0]):
        raise DockerfileError("checksum can't be specified for non-HTTP(S) sources", span)
    if not _SHA256.match(checksum):
        raise DockerfileError(f'unsupported checksum "{checksum}": only sha256:<64 hex digits> is supported',
                              span)


def parse_git_ref(src: str) -> tuple[str, str, str] | None:
    """BuildKit ``gitutil.ParseGitRef``: (remote, ref, subdir), or None for a non-git source.

    ``git@host:path``, ``ssh://``, ``git://`` are always git; ``http(s)://`` only when the path
    ends in ``.git``.  ``#ref:subdir`` selects the ref and a sub-directory."""
    if src.startswith(("./", "../", "/")):
        return None
    url, _, fragment = src.partition("#")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("git", "ssh") or (not scheme and _SCP.match(url)):
        pass
    elif scheme in ("http", "https"):
        if not urlsplit(url).path.endswith(".git"):
            return None
    else:
        return None
    ref, _, subdir = fragment.partition(":")
    return url, ref, subdir.strip("/")


def is_http(src: str) -> bool:
    return src.startswith(("http://", "https://")) and parse_git_ref(src) is None


def url_filename(url: str) -> str:
    base = posixpath.basename(urlsplit(url).path)
    return base if base not in ("", ".", "/") else "__unnamed__"
