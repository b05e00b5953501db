"""The instructions that edit a stage's image config and run defaults, not its filesystem
(WORKDIR excepted: it also creates the directory).

ENV, ARG, LABEL, MAINTAINER, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL, SHELL, CMD, ENTRYPOINT,
HEALTHCHECK and ONBUILD, each as BuildKit's ``dispatch*`` function does it: the arguments BuildKit
expands are expanded with the stage's environment (image Env plus declared ARGs), the config is
edited, and a history line is committed (``empty_layer`` unless a layer was made).  The edits
themselves are :mod:`frontends.common.stage`'s, shared with the TOML and Python frontends so the
same build gives the same image config and history from any of them.
"""

from __future__ import annotations

from contextlib import contextmanager

from frontends.common import stage as S
from frontends.dockerfile import instructions as I
from frontends.dockerfile.dispatch import Dispatch
from frontends.dockerfile.stages import DockerfileError
from frontends.errors import Span
from ir import ops



class ConfigInstructions:
    """Mixed into :class:`frontends.dockerfile.convert.Converter`; one ``_<keyword>`` per instruction."""

    def _env(self, d: Dispatch, ins: I.Env, span: Span) -> None:
        S.set_env(d, [(self.word(d, kv.key, span), self.word(d, kv.value, span)) for kv in ins.pairs])

    def _label(self, d: Dispatch, ins: I.Label, span: Span) -> None:
        S.add_labels(d, [(self.word(d, kv.key, span), self.word(d, kv.value, span)) for kv in ins.pairs])

    def _maintainer(self, d: Dispatch, ins: I.Maintainer, span: Span) -> None:
        S.set_maintainer(d, ins.maintainer)  # BuildKit does not expand MAINTAINER

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
        S.set_workdir(d, self.word(d, ins.path, span), lambda: self.meta(d, self.describe(d, ins), span))

    def _user(self, d: Dispatch, ins: I.User, span: Span) -> None:
        S.set_user(d, self.word(d, ins.user, span))

    def _expose(self, d: Dispatch, ins: I.Expose, span: Span) -> None:
        with located(span):
            S.expose(d, [p for raw in ins.ports for p in self.words(d, raw, span)])

    def _volume(self, d: Dispatch, ins: I.Volume, span: Span) -> None:
        with located(span):
            S.add_volumes(d, [self.word(d, v, span) for v in ins.paths])

    def _stopsignal(self, d: Dispatch, ins: I.StopSignal, span: Span) -> None:
        with located(span):
            S.set_stop_signal(d, self.word(d, ins.signal, span))

    def _shell(self, d: Dispatch, ins: I.Shell, span: Span) -> None:
        with located(span):
            S.set_shell(d, ins.shell)

    def _cmd(self, d: Dispatch, ins: I.Cmd, span: Span) -> None:
        S.set_cmd(d, ins.command.args, ins.command.shell_form)

    def _entrypoint(self, d: Dispatch, ins: I.Entrypoint, span: Span) -> None:
        S.set_entrypoint(d, ins.command.args, ins.command.shell_form)

    def _healthcheck(self, d: Dispatch, ins: I.Healthcheck, span: Span) -> None:
        def ns(seconds: float) -> int:
            return int(round(seconds * 1_000_000_000))

        h = ops.Healthcheck(tuple(ins.test), ns(ins.interval), ns(ins.timeout), ns(ins.start_period),
                            ns(ins.start_interval), ins.retries)
        S.set_healthcheck(d, h)

    def _onbuild(self, d: Dispatch, ins: I.Onbuild, span: Span) -> None:
        S.add_onbuild(d, ins.expression)


owner_of = S.owner_of


@contextmanager
def located(span: Span):
    """A shared stage function's complaint, at the instruction's place."""
    try:
        yield
    except S.StageError as e:
        raise DockerfileError(e.message, span) from None
