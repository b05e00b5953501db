"""The instructions that edit a stage's image config and run defaults, not its filesystem
(WORKDIR excepted: it also creates the directory).

ENV, ARG, LABEL, MAINTAINER, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL, SHELL, CMD, ENTRYPOINT,
HEALTHCHECK and ONBUILD, each as BuildKit's ``dispatch*`` function does it: the arguments BuildKit
expands are expanded with the stage's environment (image Env plus declared ARGs), the config is
edited, and a history line is committed (``empty_layer`` unless a layer was made).
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from frontends.dockerfile import instructions as I
from frontends.dockerfile.image_config import (PortError, expose_history, go_list, go_quoted_list,
                                               healthcheck_history, parse_port_specs, valid_signal)
from frontends.dockerfile.stages import DockerfileError
from frontends.errors import Span
from ir import ops

if TYPE_CHECKING:
    from frontends.dockerfile.convert import Dispatch


class ConfigInstructions:
    """Mixed into :class:`frontends.dockerfile.convert.Converter`; one ``_<keyword>`` per instruction."""

    def _env(self, d: Dispatch, ins: I.Env, span: Span) -> None:
        pairs = [(self.word(d, kv.key, span), self.word(d, kv.value, span)) for kv in ins.pairs]
        for k, v in pairs:
            d.set_env(k, v)
            d.image.set_env(k, v)
        d.image.commit("ENV " + " ".join(f"{k}={v}" for k, v in pairs), layer=False)

    def _label(self, d: Dispatch, ins: I.Label, span: Span) -> None:
        pairs = [(self.word(d, kv.key, span), self.word(d, kv.value, span)) for kv in ins.pairs]
        for k, v in pairs:
            d.image.labels[k] = v
        d.image.commit("LABEL " + " ".join(f"{k}={v}" for k, v in pairs), layer=False)

    def _maintainer(self, d: Dispatch, ins: I.Maintainer, span: Span) -> None:
        value = ins.maintainer  # BuildKit does not expand MAINTAINER
        d.image.labels["maintainer"] = value
        d.image.commit(f"MAINTAINER {value}", layer=False)

    def _arg(self, d: Dispatch, ins: I.Arg, span: Span) -> None:
        parts = []
        for decl in ins.args:
            value = decl.default
            if decl.name in self.request.build_args:
                value = self.request.build_args[decl.name]
            elif value is not None:
                value = self.word(d, value, span)
            elif decl.name in self.plan.global_args:
                value = self.plan.global_args[decl.name]
            if value is not None:
                d.set_env(decl.name, value)
            d.build_args.append((decl.name, value))
            parts.append(decl.name + ("" if value is None else "=" + value))
        d.image.commit("ARG " + " ".join(parts), layer=False)

    def _workdir(self, d: Dispatch, ins: I.Workdir, span: Span) -> None:
        path = self.word(d, ins.path, span)
        wd = posixpath.normpath(posixpath.join("/", d.image.working_dir or "/", path))
        wd = "/" + wd.lstrip("/")
        d.image.working_dir = wd
        d.cwd = wd
        layer = wd != "/"
        if layer:
            owner = owner_of(d.image.user) if d.image.user else None
            meta = self.meta(d, self.describe(d, ins), span)
            d.state = d.state.file([ops.FileAction(mkdir=ops.MkdirAction(wd, 0o755, True, owner))], meta=meta)
        d.image.commit("WORKDIR " + wd, layer=layer)

    def _user(self, d: Dispatch, ins: I.User, span: Span) -> None:
        user = self.word(d, ins.user, span)
        d.user = user
        d.image.user = user
        d.image.commit(f"USER {user}", layer=False)

    def _expose(self, d: Dispatch, ins: I.Expose, span: Span) -> None:
        ports = [p for raw in ins.ports for p in self.words(d, raw, span)]
        try:
            found = parse_port_specs(ports)
        except PortError as e:
            raise DockerfileError(str(e), span) from None
        d.image.exposed_ports |= found
        d.image.commit(expose_history(found), layer=False)

    def _volume(self, d: Dispatch, ins: I.Volume, span: Span) -> None:
        vols = [self.word(d, v, span) for v in ins.paths]
        for v in vols:
            if not v:
                raise DockerfileError("VOLUME specified can not be an empty string", span)
            d.image.volumes.add(v)
        d.image.commit(f"VOLUME {go_list(vols)}", layer=False)

    def _stopsignal(self, d: Dispatch, ins: I.StopSignal, span: Span) -> None:
        sig = self.word(d, ins.signal, span)
        if not valid_signal(sig):
            raise DockerfileError(f"Invalid signal: {sig}", span)
        d.image.stop_signal = sig
        d.image.commit(f"STOPSIGNAL {sig}", layer=False)

    def _shell(self, d: Dispatch, ins: I.Shell, span: Span) -> None:
        d.image.shell = list(ins.shell)
        d.image.commit(f"SHELL {go_list(ins.shell)}", layer=False)

    def _cmd(self, d: Dispatch, ins: I.Cmd, span: Span) -> None:
        args = list(ins.command.args)
        if ins.command.shell_form:
            args = d.image.with_shell(args)
        d.image.cmd = args
        d.cmd_set = True
        d.image.commit(f"CMD {go_quoted_list(args)}", layer=False)

    def _entrypoint(self, d: Dispatch, ins: I.Entrypoint, span: Span) -> None:
        args = list(ins.command.args)
        if ins.command.shell_form:
            args = d.image.with_shell(args)
        d.image.entrypoint = args
        if not d.cmd_set:  # Docker: ENTRYPOINT resets an inherited CMD
            d.image.cmd = None
        d.image.commit(f"ENTRYPOINT {go_quoted_list(args)}", layer=False)

    def _healthcheck(self, d: Dispatch, ins: I.Healthcheck, span: Span) -> None:
        def ns(seconds: float) -> int:
            return int(round(seconds * 1_000_000_000))

        h = ops.Healthcheck(tuple(ins.test), ns(ins.interval), ns(ins.timeout), ns(ins.start_period),
                            ns(ins.start_interval), ins.retries)
        d.image.healthcheck = h
        d.image.commit(healthcheck_history(h), layer=False)

    def _onbuild(self, d: Dispatch, ins: I.Onbuild, span: Span) -> None:
        d.image.on_build.append(ins.expression)


def owner_of(chown: str) -> ops.Owner:
    user, _, group = chown.partition(":")
    return ops.Owner(user, group)
