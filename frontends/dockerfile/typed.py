"""Syntax nodes → typed instructions (BuildKit's ``instructions`` layer), with located errors.

Each keyword checks its argument count and its flags (name, type, value) the way
``instructions/parse.go`` and ``bflag.go`` do, and every error points at the offending word:
the keyword for an unknown instruction (with a "did you mean"), the flag for an unknown flag or a
bad value, the character inside a ``--mount`` value.
"""

from __future__ import annotations

import re

from frontends.common.mounts import MountError, parse_mount
from frontends.dockerfile import instructions as I
from frontends.dockerfile.arguments import FlagWord
from frontends.dockerfile.heredocs import HEREDOC_WORD, heredoc_from
from frontends.dockerfile.syntax import Node, SyntaxTree
from frontends.errors import SourceError, Span, did_you_mean
from ir import ops

BOOL, STRING, STRINGS = "bool", "string", "strings"

FLAG_SPECS: dict[str, dict[str, str]] = {
    "FROM": {"platform": STRING},
    "RUN": {"mount": STRINGS, "network": STRING, "security": STRING, "device": STRINGS},
    "COPY": {"from": STRING, "chown": STRING, "chmod": STRING, "link": BOOL, "parents": BOOL,
             "exclude": STRINGS},
    "ADD": {"chown": STRING, "chmod": STRING, "link": BOOL, "keep-git-dir": BOOL,
            "checksum": STRING, "exclude": STRINGS, "unpack": BOOL},
    "HEALTHCHECK": {"interval": STRING, "timeout": STRING, "start-period": STRING,
                    "start-interval": STRING, "retries": STRING},
}

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_OCTAL = re.compile(r"^[0-7]+$")
_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+(?:,[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+)*$")
_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DIGEST = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}|[0-9a-f]{40}|[0-9a-f]{64})$")


class Builder:
    """Turns the nodes of one :class:`SyntaxTree` into instructions."""

    def __init__(self, tree: SyntaxTree) -> None:
        self.tree = tree
        self.src = tree.source
        self._methods = {kw: getattr(self, "_" + kw.lower()) for kw in I.INSTRUCTION_TYPES}

    # -- locating ---------------------------------------------------------------------------
    def at(self, node: Node, offset: int, length: int = 1) -> Span:
        line, col = node.line.position(offset)
        return self.src.span(line, col, col + max(length, 1))

    def keyword_span(self, node: Node) -> Span:
        line, col = node.line.position(node.cmd_offset)
        return Span(self.src.filename, line, col, node.end_line, col + len(node.cmd),
                         self.src.display(line))

    def error(self, node: Node, message: str, offset: int | None = None, length: int = 0):
        if offset is None:
            return SourceError(message, self.keyword_span(node))
        return SourceError(message, self.at(node, offset, length))

    def args_error(self, node: Node, message: str):
        return self.error(node, message, node.args_offset, len(node.rest.split("\n")[0]) or 1)

    # -- flags ------------------------------------------------------------------------------
    def flags(self, node: Node, kw: str) -> tuple[tuple[I.Flag, ...], dict[str, object]]:
        if not node.flags:
            return (), {}
        spec = FLAG_SPECS.get(kw, {})
        out: list[I.Flag] = []
        values: dict[str, object] = {}
        for fw in node.flags:
            flag = self._flag(node, fw, kw, spec, values)
            if flag is None:
                break
            out.append(flag)
        return tuple(out), values

    def _flag(self, node: Node, fw: FlagWord, kw: str, spec: dict, values: dict) -> I.Flag | None:
        span = self.at(node, fw.start, fw.end - fw.start)
        text = fw.text
        if not text.startswith("--"):
            raise SourceError(f"Arg should start with -- : {text}", span)
        if text == "--":
            return None
        name, eq, value = text[2:].partition("=")
        kind = spec.get(name)
        if kind is None:
            hint = did_you_mean(name, list(spec), "--") if spec else ""
            where = f" for {kw}" if spec else f" ({kw} takes no flags)"
            raise SourceError(f"unknown flag: --{name}{where}{hint}", span)
        if name in values and kind != STRINGS:
            raise SourceError(f"duplicate flag specified: --{name}", span)
        if kind == BOOL:
            if eq and value == "":
                raise SourceError(f"missing a value on flag: --{name}", span)
            low = value.lower()
            if low not in ("", "true", "false"):
                raise SourceError(f"expecting boolean value for flag --{name}, not: {value}", span)
            values[name] = low != "false"
        elif not eq:
            raise SourceError(f"missing a value on flag: --{name}", span)
        elif kind == STRING:
            values[name] = value
        else:
            values.setdefault(name, []).append((value, fw))  # type: ignore[union-attr]
        return I.Flag(name=name, value=value if eq else None, span=span)

    # -- the dispatch -----------------------------------------------------------------------
    def build(self, node: Node) -> I.Instruction:
        kw = node.cmd.upper()
        method = self._methods.get(kw)
        if method is None:
            raise self.error(node, f"unknown instruction: {node.cmd}"
                             + did_you_mean(node.cmd.upper(), list(I.KEYWORDS)))
        flags, fv = self.flags(node, kw)
        heredocs = tuple(
            I.Heredoc(h.name, h.content, h.file_descriptor, h.expand, h.chomp,
                      Span(self.src.filename, h.start_line, 1, h.end_line, 0,
                           self.src.display(h.start_line)))
            for h in node.heredocs
        ) if node.heredocs else ()
        common = dict(keyword=node.cmd, span=self.keyword_span(node), original=node.original,
                      flags=flags, heredocs=heredocs)
        return method(node, fv, common)

    def _exactly_one(self, node: Node) -> str:
        if len(node.values) != 1:
            raise self.error(node, f"{node.keyword.upper()} requires exactly one argument")
        return node.values[0]

    def _from(self, node, fv, common):
        args = node.values
        name = None
        if len(args) == 3 and args[1].lower() == "as":
            name = args[2].lower()
            if not _STAGE_NAME.match(name):
                off = node.args_offset + node.rest.rfind(args[2])
                raise self.error(node, f'invalid name for build stage: "{args[2]}", name can\'t '
                                 "start with a number or contain symbols", off, len(args[2]))
        elif len(args) != 1:
            raise self.error(node, "FROM requires either one or three arguments")
        return I.From(**common, image=args[0], stage_name=name,
                      stage_name_as_written=args[2] if name else None, platform=fv.get("platform"))

    def _command_line(self, node: Node, values: list[str]) -> I.CommandLine:
        eff = node
        if eff.json:
            return I.CommandLine(tuple(values), False)
        return I.CommandLine((" ".join(values),) if values else (), True)

    def _run(self, node, fv, common):
        mounts = []
        ssh_n = 0
        for value, fw in fv.get("mount", []):
            try:
                m = parse_mount(value, ssh_index=ssh_n)
            except MountError as e:
                first = fw.text.index("=") + 1 + e.offset
                off = fw.source_offset(first)
                end = fw.source_offset(first + max(e.length, 1) - 1) + 1
                raise self.error(node, e.message, off, end - off) from None
            mounts.append(m)
            ssh_n += m.type == "ssh"
        net, sec = fv.get("network"), fv.get("security")
        for flag, val, allowed in (("network", net, ops.NETWORK_MODES), ("security", sec, ops.SECURITY_MODES)):
            if val is not None and "$" not in val and val not in allowed:
                f = next(x for x in common["flags"] if x.name == flag)
                raise SourceError(f'unsupported {flag} mode "{val}"' + did_you_mean(val, allowed), f.span)
        return I.Run(**common, command=self._command_line(node, node.values), mounts=tuple(mounts),
                      network=net, security=sec, devices=tuple(v for v, _ in fv.get("device", [])))

    def _cmd(self, node, fv, common):
        return I.Cmd(**common, command=self._command_line(node, node.values))

    def _entrypoint(self, node, fv, common):
        return I.Entrypoint(**common, command=self._command_line(node, node.values))

    def _shell(self, node, fv, common):
        if not node.values or (node.json and not node.values):
            raise self.error(node, "SHELL requires at least one argument")
        if not node.json:
            raise self.args_error(node, "SHELL requires the arguments to be in JSON form")
        return I.Shell(**common, shell=tuple(node.values))

    def _pairs(self, node: Node) -> tuple[I.KeyValue, ...]:
        kw = node.keyword.upper()
        vals = node.values
        if not vals:
            raise self.error(node, f"{kw} requires at least one argument")
        out = []
        for i in range(0, len(vals), 3):
            if not vals[i]:
                raise self.args_error(node, f"{kw} names can not be blank")
            out.append(I.KeyValue(vals[i], vals[i + 1], legacy=vals[i + 2] == ""))
        return tuple(out)

    def _env(self, node, fv, common):
        return I.Env(**common, pairs=self._pairs(node))

    def _label(self, node, fv, common):
        return I.Label(**common, pairs=self._pairs(node))

    def _maintainer(self, node, fv, common):
        return I.Maintainer(**common, maintainer=self._exactly_one(node))

    def _expose(self, node, fv, common):
        if not node.values:
            raise self.error(node, "EXPOSE requires at least one argument")
        return I.Expose(**common, ports=tuple(node.values))

    def _file_op(self, node: Node, fv: dict, common: dict) -> dict:
        kw = node.keyword.upper()
        args = node.values
        if len(args) < 2:
            raise self.error(node, f"{kw} requires at least two arguments, but only one was "
                             "provided. Destination could not be determined")
        dest = args[-1]
        if not node.json and HEREDOC_WORD.match(dest) and HEREDOC_WORD.match(dest).group(3):
            raise self.args_error(node, f"{kw} cannot accept a heredoc as a destination")
        docs = {h.name: h for h in common["heredocs"]}
        sources, contents = [], []
        for src in args[:-1]:
            m = None if node.json else HEREDOC_WORD.match(src)
            doc = m and m.group(3) and heredoc_from(m.group(1), m.group(2) == "-", m.group(3))
            if doc and doc.name in docs:
                h = docs[doc.name]
                contents.append(I.SourceContent(h.name, h.text(), h.expand))
            else:
                sources.append(src)
        chmod = fv.get("chmod")
        if chmod is not None and "$" not in chmod:
            if not (_OCTAL.match(chmod) and int(chmod, 8) <= 0o7777) and not _SYMBOLIC.match(chmod):
                f = next(x for x in common["flags"] if x.name == "chmod")
                raise SourceError(f'invalid --chmod value "{chmod}": expected an octal mode such '
                                  "as 0755 or a symbolic mode such as u+rwx,go+rx", f.span)
        return dict(sources=tuple(sources), contents=tuple(contents), dest=dest,
                    json_form=node.json, chown=fv.get("chown"), chmod=chmod,
                    link=bool(fv.get("link", False)),
                    exclude=tuple(v for v, _ in fv.get("exclude", [])))

    def _copy(self, node, fv, common):
        return I.Copy(**common, **self._file_op(node, fv, common), from_=fv.get("from"),
                      parents=bool(fv.get("parents", False)))

    def _add(self, node, fv, common):
        checksum = fv.get("checksum")
        if checksum and "$" not in checksum and not _DIGEST.match(checksum):
            f = next(x for x in common["flags"] if x.name == "checksum")
            raise SourceError(f'invalid checksum digest format "{checksum}"', f.span)
        return I.Add(**common, **self._file_op(node, fv, common), checksum=checksum,
                     keep_git_dir=bool(fv.get("keep-git-dir", False)), unpack=fv.get("unpack"))

    def _volume(self, node, fv, common):
        if not node.values:
            raise self.error(node, "VOLUME requires at least one argument")
        paths = []
        for v in node.values:
            if not v.strip():
                raise self.args_error(node, "VOLUME specified can not be an empty string")
            paths.append(v.strip())
        return I.Volume(**common, paths=tuple(paths))

    def _user(self, node, fv, common):
        return I.User(**common, user=self._exactly_one(node))

    def _workdir(self, node, fv, common):
        return I.Workdir(**common, path=self._exactly_one(node))

    def _stopsignal(self, node, fv, common):
        return I.StopSignal(**common, signal=self._exactly_one(node))

    def _arg(self, node, fv, common):
        if not node.values:
            raise self.error(node, "ARG requires at least one argument")
        decls = []
        for word in node.values:
            name, eq, default = word.partition("=")
            if eq and not name:
                raise self.args_error(node, "ARG names can not be blank")
            decls.append(I.ArgDecl(name, default if eq else None))
        return I.Arg(**common, args=tuple(decls))

    def _onbuild(self, node, fv, common):
        sub = node.sub
        if sub is None:
            raise self.error(node, "ONBUILD requires at least one argument")
        trig = sub.keyword.upper()
        if trig == "ONBUILD":
            raise self.error(sub, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trig in ("MAINTAINER", "FROM"):
            raise self.error(sub, f"{trig} isn't allowed as an ONBUILD trigger")
        sub.heredocs = node.heredocs
        trigger = self.build(sub)
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.line.text)
        for h in node.heredocs:
            expression += "\n" + h.content + h.name
        return I.Onbuild(**common, expression=expression, trigger=trigger)

    def _healthcheck(self, node, fv, common):
        if not node.values:
            raise self.error(node, "HEALTHCHECK requires at least one argument")
        typ = node.values[0].upper()
        args = node.values[1:]
        if typ == "NONE":
            if args:
                raise self.args_error(node, "HEALTHCHECK NONE takes no arguments")
            return I.Healthcheck(**common, test=("NONE",))
        if typ != "CMD":
            raise self.args_error(node, f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
        if not args:
            raise self.args_error(node, "Missing command after HEALTHCHECK CMD")
        test = ("CMD", *args) if node.json else ("CMD-SHELL", " ".join(args))
        times = {}
        for name in ("interval", "timeout", "start-period", "start-interval"):
            raw = fv.get(name) or ""
            times[name.replace("-", "_")] = self._duration(node, common, name, raw)
        retries = 0
        raw = fv.get("retries") or ""
        if raw:
            f = next(x for x in common["flags"] if x.name == "retries")
            if not re.fullmatch(r"[+-]?\d+", raw) or not -(2**31) <= int(raw) < 2**31:
                raise SourceError(f'invalid --retries value "{raw}": not a number', f.span)
            retries = int(raw)
            if retries < 0:
                raise SourceError(f"--retries cannot be negative ({retries})", f.span)
        return I.Healthcheck(**common, test=test, retries=retries, **times)

    def _duration(self, node, common, name: str, raw: str) -> float:
        if raw == "" or "$" in raw:
            return 0.0
        f = next(x for x in common["flags"] if x.name == name)
        s = raw.lstrip("+-")
        neg = raw.startswith("-")
        total = 0.0
        if s == "0":
            return 0.0
        pos = 0
        while pos < len(s):
            m = _DURATION_PART.match(s, pos)
            if not m or m.group(1) in ("", "."):
                raise SourceError(f'time: invalid duration "{raw}"', f.span)
            total += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if not s:
            raise SourceError(f'time: invalid duration "{raw}"', f.span)
        total = -total if neg else total
        if total != 0 and total < 0.001:
            raise SourceError(f'Interval "{name}" cannot be less than 1ms', f.span)
        return total
