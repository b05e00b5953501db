"""What the instruction lowerings share: the stage being lowered and the compiler's services.

:mod:`.convert` (the compiler) owns the stages, the expander and the source map;
:mod:`.convert_run`, :mod:`.convert_copy` and :mod:`.convert_config` lower one instruction each
and see the compiler only through :class:`Lowering`, defined here, so the imports run one way:
``convert`` → ``convert_*`` → ``dispatch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from frontends import BuildRequest
from frontends.common.image_config import ImageState
from frontends.dockerfile import instructions as I
from frontends.dockerfile.stages import Plan, StageInfo
from frontends.errors import Span
from ir import builder, ops


@dataclass(eq=False)
class Dispatch:
    """A stage being lowered: its state, image config, run defaults and build args (the shape
    :mod:`frontends.common.stage` edits)."""

    info: StageInfo
    state: builder.State
    image: ImageState
    platform: ops.Platform
    env: dict[str, str] = field(default_factory=dict)  # what RUN sees: image Env + ARG values
    cwd: str = "/"
    user: str = ""
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    cmd_total: int = 0
    cmd_index: int = 0
    cmd_set: bool = False
    on_build: bool = False  # the instruction being lowered is an ONBUILD trigger

    def set_env(self, key: str, value: str) -> None:
        self.env[key] = value


@dataclass
class External:
    """An image or named context read by ``COPY --from`` / ``RUN --mount from=``, or a FROM base."""

    state: builder.State
    image: ImageState
    platform: ops.Platform


class Lowering(Protocol):
    """The compiler's services an instruction lowering uses (:class:`.convert.Converter`)."""

    request: BuildRequest
    plan: Plan

    def word(self, d: Dispatch, text: str, span: Span) -> str:
        """``text`` expanded with the stage's environment."""

    def words(self, d: Dispatch, text: str, span: Span) -> list[str]:
        """``text`` expanded and split into words."""

    def describe(self, d: Dispatch, ins: I.Instruction) -> str:
        """The instruction as progress shows it."""

    def meta(self, d: Dispatch, text: str, span: Span, *, step: bool = True) -> ops.OpMetadata:
        """The source-map entry of the next op (``step``: counted as a build step)."""

    def prefix(self, d: Dispatch, text: str) -> str:
        """``text`` with the step counter in front."""

    def location(self, span: Span) -> ops.Location:
        """``span`` in the source map."""

    def warn(self, rule: str, message: str, span: Span) -> None:
        """A build-check warning."""

    def run_env(self, d: Dispatch) -> tuple[str, ...]:
        """The environment a RUN sees."""

    def ignored(self, src: str) -> bool:
        """Whether ``.dockerignore`` leaves ``src`` out of the build context."""

    def context(self) -> builder.State:
        """The build context."""

    def source_of(self, d: Dispatch, value: str, span: Span, what: str = "copy") -> tuple[builder.State, ImageState]:
        """The filesystem and image config ``--from=value`` names."""
