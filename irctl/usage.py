"""The command line before and around click: buildx's spellings click cannot parse, and the one-line
error for an option that does not exist.

``--pull`` is a plain flag in buildx (``--pull .`` builds ``.``), yet ``--pull=always`` is what a
podman or newer-docker user types.  Click lets an option take a value either always (then ``--pull .``
swallows the context) or never (then ``--pull=true`` is an error), so ``--pull=VALUE`` is handed to
a hidden ``--pull-policy`` before click parses (``spell_argv``) and ``irctl.buildx_flags.pull``
reads both.  ``docker build``'s flags buildx accepts hidden and ignores (``--rm``, ``--force-rm``,
``-m``, ``--cpu-shares``, …) are left out there too, with a warning, so an old script keeps working.

Click answers an unknown option with the usage text and "Possible options" (every option sharing a
prefix, e.g. ``--file, --pull`` for ``--lable``); ``Group`` replaces that, for every command, with
one line naming the closest real option, as git and cargo do.  Click's other usage errors (a second
context, an option without its value, a value of the wrong type) are one line too, not a framed box.
"""

from __future__ import annotations

import sys

import typer.core

from irctl.terminal import printable

try:  # typer 0.28+ parses with a copy of click of its own: its exceptions are the ones raised
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # older typer: click itself
    from click.exceptions import NoSuchOption, UsageError

# per command, buildx's `--OPTION=VALUE` spellings of a flag and the hidden option taking the value
_VALUED_FLAGS = {"build": {"--pull": "--pull-policy"}, "compile": {"--pull": "--pull-policy"}}
# per command, `docker build`'s flags buildx accepts (hidden) and ignores, BuildKit having no use for them;
# True: the flag takes a value
_IGNORED_FLAGS = {"build": {
    "--rm": False, "--force-rm": False, "--compress": False, "--squash": False, "--isolation": True,
    "--security-opt": True, "-m": True, "--memory": True, "--memory-swap": True, "-c": True, "--cpu-shares": True,
    "--cpu-period": True, "--cpu-quota": True, "--cpuset-cpus": True, "--cpuset-mems": True}}


def spell_argv(argv: list[str]) -> list[str]:
    """``irctl build --pull=VALUE`` as ``--pull-policy=VALUE``, ``docker build``'s ignored flags left
    out (with a warning each); everything after ``--`` untouched."""
    command = next((a for a in argv if not a.startswith("-")), None)
    flags = _VALUED_FLAGS.get(command or "")
    ignored = _IGNORED_FLAGS.get(command or "", {})
    if not flags:
        return argv
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:  # the value of an ignored flag
            skip = False
            continue
        if arg == "--":
            return out + argv[i:]
        name, eq, value = arg.partition("=")
        if not eq and arg[:2] in ignored and not arg.startswith("--") and len(arg) > 2:
            name, eq = arg[:2], "="  # `-m1g`: a short flag with its value attached
        if name in ignored:
            skip = ignored[name] and not eq
            sys.stderr.write(f"warning: {name} is ignored (docker build's flag, accepted as buildx does)\n")
            continue
        out.append(f"{flags[name]}={value}" if eq and name in flags else arg)
    return out


def no_such_option(e: NoSuchOption) -> str:
    """``irctl build: no such option --lable (did you mean --label?)``."""
    import difflib  # lazy: only an unknown option pays for it

    ctx = e.ctx
    where = ctx.command_path if ctx is not None else "irctl"
    real = sorted({o for p in (ctx.command.get_params(ctx) if ctx is not None else ())
                   for o in (*p.opts, *p.secondary_opts) if o.startswith("-") and not getattr(p, "hidden", False)})
    name = e.option_name
    best = difflib.get_close_matches(name, real, n=1, cutoff=0.6)
    hint = f"did you mean {best[0]}?" if best else f"see {where} --help"
    return f"{where}: no such option {name} ({hint})"


class Group(typer.core.TyperGroup):
    """irctl's top-level command group: an unknown option of any command is one line (exit 2)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as e:
            _exit_usage(e, ctx)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as e:  # a sub-command's option: raised while its context is made
            _exit_usage(e, ctx)


def usage_line(e: UsageError, ctx) -> str:
    """``irctl build: got unexpected extra argument(s) (b)``: click's message, as one of irctl's lines."""
    if isinstance(e, NoSuchOption):
        return no_such_option(e)
    sub = getattr(ctx, "invoked_subcommand", None)  # click raised it before making the command's context
    where = e.ctx.command_path if e.ctx is not None else " ".join(filter(None, (ctx.command_path, sub)))
    said = " ".join(e.format_message().split()).rstrip(".")
    return f"{where}: {said[:1].lower()}{said[1:]}"


def _exit_usage(e: UsageError, ctx):
    sys.stderr.write(printable(usage_line(e, ctx)) + "\n")  # one line, whatever was typed
    ctx.exit(2)
