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


from frontends.common import stage as S
from frontends.common.copy_paths import check_checksum, check_chmod
from frontends.common.errors import ExpandError, StageError
from frontends.common.expand import Expander
from frontends.common.gostrings import go_quote
from frontends.dockerfile import instructions as I
from frontends.dockerfile.dispatch import Dispatch, Lowering
from frontends.dockerfile.stages import DockerfileError
from frontends.errors import Span
from ir import ops



def dispatch_copy(conv: Lowering, d: Dispatch, ins: I.Copy | I.Add, span: Span) -> None:
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
        try:
            chmod = check_chmod(chmod)
        except StageError as e:
            raise DockerfileError(e.message, flag_span("chmod")) from None
    exclude = tuple(conv.word(d, e, flag_span("exclude")) for e in ins.exclude)
    checksum = ""
    if is_add and ins.checksum:
        checksum = conv.word(d, ins.checksum, flag_span("checksum"))
        try:
            check_checksum(checksum, sources)
        except StageError as e:
            raise DockerfileError(e.message, flag_span("checksum")) from None
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
    except StageError as e:
        raise DockerfileError(e.message, span) from None
