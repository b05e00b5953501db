"""RUN → an exec op: the command line (shell form, exec form, heredocs) and every ``--mount``.

Follows BuildKit's ``dispatchRun`` and ``dispatchRunMounts``:

* shell form runs ``SHELL`` (default ``/bin/sh -c``) with the joined command; exec form as given;
* ``RUN <<EOF`` (the whole command one heredoc) runs the body as the script; a body starting with
  ``#!`` is written to a scratch file mounted at ``/dev/pipes/`` and executed; any other heredoc
  use is handed to the shell reconstituted (``cmd\\nbody\\nEOF``);
* mounts: bind (from the context, a stage, an image; ``source`` → selector; read-only unless
  ``rw``, whose writes are discarded), cache (id defaults to the cleaned target, seeded ``from``),
  tmpfs, secret, ssh; relative targets are relative to WORKDIR;
* the environment is the stage's: image Env plus declared ARG values (not persisted), plus proxy
  build args; cwd and user from WORKDIR and USER.
"""

from __future__ import annotations

import posixpath

from frontends.common import stage as S
from frontends.common.mounts import MountError, parse_mount
from frontends.dockerfile import instructions as I
from frontends.dockerfile.dispatch import Dispatch, Lowering
from frontends.dockerfile.heredocs import HEREDOC_WORD, heredoc_from
from frontends.dockerfile.stages import DockerfileError
from frontends.errors import Span, did_you_mean
from ir import builder, ops



def dispatch_run(conv: Lowering, d: Dispatch, ins: I.Run, span: Span) -> None:
    args = list(ins.command.args)
    name = conv.describe(d, ins)
    extra: list[builder.RunMount] = []
    if ins.heredocs:
        if len(args) != 1 or not ins.command.shell_form:
            raise DockerfileError(f"parsing produced an invalid run command: {args}", span)
        if single_heredoc(args[0]):
            doc = ins.heredocs[0]
            data = doc.text()
            if d.image.os != "windows" and doc.content.startswith("#!"):
                script = builder.scratch().file(
                    [ops.FileAction(mkfile=ops.MkfileAction("/" + doc.name, data.encode(), 0o755))],
                    meta=ops.OpMetadata("[internal] preparing inline document", d.info.group,
                                        (conv.location(span),)), on_scratch=True)
                extra.append(builder.bind("/dev/pipes", script, readonly=True))
                args = [posixpath.join("/dev/pipes/", doc.name)]
            else:
                args = [data]
            name += f" ({summarize_heredoc(doc.content)})"
        else:
            args = [args[0] + "".join("\n" + h.content + h.name for h in ins.heredocs)]
    if ins.command.shell_form:
        args = d.image.with_shell(args)

    mounts = extra + run_mounts(conv, d, ins, span)
    network = _mode(conv, d, ins, "network", ins.network, ops.NETWORK_MODES, span)
    security = _mode(conv, d, ins, "security", ins.security, ops.SECURITY_MODES, span)
    meta = conv.meta(d, name, span)
    try:
        S.run(d, args, shell_form=False, mounts=mounts, env=conv.run_env(d), network=network,
              security=security, meta=meta, sandbox=conv.request.exec_sandbox())
    except S.StageError as e:
        raise DockerfileError(e.message, span) from None


def single_heredoc(word: str) -> bool:
    """BuildKit ``MustParseHeredoc``: the whole command is one ``<<WORD``."""
    m = HEREDOC_WORD.match(word)
    return bool(m and m.group(3) and heredoc_from(m.group(1), m.group(2) == "-", m.group(3)))


def summarize_heredoc(doc: str) -> str:
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")


# BuildKit ``runCommandString`` (``|2 A=1 B=2 /bin/sh -c make``), shared with the other frontends.
run_command_string = S.run_command_string


def _mode(conv, d, ins: I.Run, flag: str, value: str | None, allowed, span: Span) -> str | None:
    if value is None:
        return None
    f = ins.flag(flag)
    fspan = f.span if f else span
    value = conv.word(d, value, fspan)
    if value not in allowed:
        raise DockerfileError(f'unsupported {flag} mode "{value}"' + did_you_mean(value, allowed), fspan)
    return value


def run_mounts(conv: Lowering, d: Dispatch, ins: I.Run, span: Span) -> list[builder.RunMount]:
    """The RUN's mounts as the exec op's: read (and defaulted) when the instruction was parsed,
    read again with the build args expanded when a value holds a ``$variable``."""
    flags = [f for f in ins.flags if f.name == "mount"]
    out: list[builder.RunMount] = []
    ssh_n = 0
    for n, m in enumerate(ins.mounts):
        fspan = flags[n].span if n < len(flags) else span
        if m.deferred:
            try:
                m = parse_mount(flags[n].value or "", expand=lambda s: conv.word(d, s, fspan), ssh_index=ssh_n)
            except MountError as e:
                raise DockerfileError(e.message, fspan) from None
        ssh_n += m.type == "ssh"
        try:
            out.append(S.lower_mount(d.cwd, m, lambda name: conv.source_of(d, name, fspan, "mount")[0],
                                     conv.context))
        except S.StageError as e:
            raise DockerfileError(e.message, fspan) from None
    return out
