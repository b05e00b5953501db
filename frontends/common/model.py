"""The recipe model: what a TOML recipe or a Python DSL file says, before it is lowered to IR.

Both frontends read their own syntax into these plain values and hand them to
:mod:`frontends.common.lower`, which lowers them with the same stage functions the Dockerfile
compiler uses (:mod:`frontends.common.stage`).  Every value carries a :class:`Where` — the file,
line and key path it came from — so errors and the source map point into the user's own file.

Step ``kind`` and ``fields`` (names as in ``spec/recipe.md``; strings are expanded by the
TOML frontend, taken verbatim by the Python DSL):

=============  ===========================================================================
run            ``cmd`` (str: shell form · list: argv), ``env`` {}, ``workdir``, ``user``,
               ``network``, ``security``, ``mounts`` [MountDecl]
copy, add      ``src`` [str], ``dest``, ``from``, ``chown``, ``chmod``, ``link``, ``exclude`` [],
               ``parents``; add only: ``checksum``, ``keep_git_dir``, ``unpack``
env, label     ``pairs`` [(k, v)]
workdir, user  ``value``            stopsignal  ``value``
expose         ``ports`` []         volume      ``paths`` []
cmd,           ``cmd`` (str: shell form · list: exec form)
entrypoint
shell          ``argv`` []
healthcheck    ``cmd`` (None: NONE · str · list), ``interval`` … (seconds), ``retries``
arg            ``name``, ``default`` (None: no default)
onbuild        ``value`` (a Dockerfile instruction)   maintainer  ``value``
=============  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

@dataclass(frozen=True)
class Where:
    """A place in a source file: 1-based line (0: unknown), and the key path inside the document."""

    file: str
    line: int = 0
    path: str = ""
    column: int = 0

    def at(self, path: str, line: int | None = None) -> "Where":
        return Where(self.file, self.line if line is None else line, path, self.column)


@dataclass(frozen=True)
class MountDecl:
    """A ``run`` mount as a recipe declares it, values unexpanded: ``options`` use the ``--mount``
    key names and are typed (str, bool, int); lowering reads them with
    :func:`frontends.common.mounts.mount_from_options`, as the Dockerfile's flag text is read."""

    type: str
    options: tuple[tuple[str, Any], ...]
    where: Where
    lines: dict[str, int] = field(default_factory=dict)  # line of each option's key, when known


@dataclass(frozen=True)
class Step:
    kind: str
    fields: dict[str, Any]
    where: Where
    text: str = ""  # how progress shows it, e.g. "RUN make"
    lines: dict[str, int] = field(default_factory=dict)  # line of each field's key, when known

    def at(self, key: str) -> Where:
        """Where field ``key`` of this step is (its own line when known)."""
        w = self.where
        return Where(w.file, self.lines.get(key, w.line), f"{w.path}.{key}" if w.path else "", w.column)


@dataclass(frozen=True)
class StageDecl:
    name: str
    base: str  # an image reference, another stage's name, or "scratch" (expanded with the global args)
    steps: tuple[Step, ...]
    where: Where
    platform: str = ""
    base_where: Where | None = None  # where ``from`` is written (default: ``where``)
    platform_where: Where | None = None  # where ``platform`` is written (default: ``where``)
    base_is_stage: bool | None = None  # None: when ``base`` names a stage; False: never (an image)


@dataclass(frozen=True)
class Recipe:
    stages: tuple[StageDecl, ...]
    args: tuple[tuple[str, str | None, Where], ...] = ()  # global build args: name, default, where
    targets: dict[str, tuple[str, Where]] = field(default_factory=dict)  # target -> stage name
    language: str = ""  # the SourceFile language: "toml", "python"
    expand: bool = True  # expand $VARS in values with the Dockerfile rules
