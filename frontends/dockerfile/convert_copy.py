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
from frontends.dockerfile.arguments import go_quote
from frontends.errors import Span
from ir import ops

if TYPE_CHECKING:
    from frontends.dockerfile.convert import Converter, Dispatch

_OCTAL = re.compile(r"^[0-7]+$")
_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+(?:,[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+)*$")
_SCP = re.compile(r"^[\w.\-]+@[\w.\-]+:")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def dispatch_copy(conv: "Converter", d: "Dispatch", ins: I.Copy | I.Add, span: Span) -> None:
    from frontends.common import stage as S  # (it reads this module's helpers: imported late)

    is_add = isinstance(ins, I.Add)
    kw = "ADD" if is_add else "COPY"

    def flag_span(name: str) -> Span:
        f = ins.flag(name)
        return f.span if f else span

    sources = [conv.word(d, s, span) for s in ins.sources]
    dest_raw = conv.word(d, ins.dest, span)
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

    desc = conv.prefix(d, conv.describe(d, ins))
    meta = ops.OpMetadata(desc, d.info.group, (conv.location(span),))
    head, sep, rest = desc.partition("] ")
    link_meta = ops.OpMetadata(f"{head}] LINK {rest}" if sep else "LINK " + desc, d.info.group, meta.locations)

    from_state = None
    if isinstance(ins, I.Copy) and ins.from_:
        from_state = conv.source_of(d, ins.from_, flag_span("from"))[0]

    def ignored(src: str) -> None:
        if conv.ignored(src):
            conv.warn("CopyIgnoredFile", f"Attempting to {kw.capitalize()} file {go_quote(src)} that is "
                      "excluded by .dockerignore", span)

    raw = Expander("\\", skip_process_quotes=True)
    inline = []
    for content in ins.contents:
        data = content.data
        if content.expand:
            try:
                data = raw.word(data, d.env)
            except ExpandError as e:
                raise DockerfileError(str(e), span) from None
        inline.append((content.path, data.encode()))

    try:
        S.copy_files(d, sources, dest_raw, context=conv.context, from_state=from_state, add=is_add, chown=chown,
                     chmod=chmod, chmod_text=ins.chmod if ins.chmod and "$" not in ins.chmod else chmod,
                     exclude=exclude, parents=parents, link=ins.link, checksum=checksum,
                     keep_git_dir=bool(getattr(ins, "keep_git_dir", False)),
                     unpack=ins.unpack if is_add else None, inline=inline, meta=meta, link_meta=link_meta,
                     on_local=ignored)
    except S.StageError as e:
        raise DockerfileError(e.message, span) from None


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
