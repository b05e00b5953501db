"""Validation of IR documents: the JSON Schema for structure, graph checks for everything else.

``validate_raw`` is what every reader of untrusted bytes runs; ``check_graph`` is the cheap part
that also guards graphs built in-process by a frontend.  All problems are collected and reported
together, each with a key path.
"""

from __future__ import annotations

import base64
import ipaddress
import posixpath
import re
from functools import lru_cache
from typing import Any

from ir import codec, features, normal, ops
from ir.errors import IRError, ValidationError, ValidationErrors
from ir.schema import document_schema

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
INPUT_COUNT = {"source": (0, 0), "diff": (2, 2), "image": (1, 1), "merge": (1, None), "exec": (1, None), "file": (0, None)}


def short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


def op_path(digest: str) -> str:
    return f"ops[{short(digest)}]"


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def _validator():
    import jsonschema  # third-party, ~140 ms to import (measured); only schema checks need it, never a build

    schema = document_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def json_form(value: Any) -> Any:
    """The JSON form of a decoded document: binary values become base64 strings."""
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else repr(k)): json_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_form(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def schema_errors(raw: dict) -> list[IRError]:
    errors = []
    for err in sorted(_validator().iter_errors(json_form(raw)), key=lambda e: list(map(str, e.absolute_path))):
        path = ""
        for part in err.absolute_path:
            if isinstance(part, int) or str(part).startswith("sha256:"):
                path += f"[{short(part) if isinstance(part, str) else part}]"
            else:
                path += f".{part}" if path else str(part)
        errors.append(ValidationError(_schema_message(err), path))
    return errors


def _schema_message(err) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown field(s)")
    if err.validator == "oneOf":
        return "exactly one kind must be set"
    return err.message


# --------------------------------------------------------------------------- graph


def check_graph(doc: ops.Document) -> list[IRError]:
    """Every rule the schema cannot express; returns the problems found (empty: valid)."""
    with codec.gc_paused():
        return _check_graph(doc)


def _check_graph(doc: ops.Document) -> list[IRError]:
    errors: list[IRError] = []

    def err(msg: str, path: str) -> None:
        errors.append(ValidationError(msg, path))

    # Key paths are built only when there is an error: this loop runs once per op.
    n_outputs: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for digest, op in doc.ops.items():
        kind = kinds[digest] = op.kind
        n_outputs[digest] = 1 if kind != "exec" else _outputs(op, digest, err)
    checks = _CHECKS
    alike: dict[str, str] = {}
    for digest, op in doc.ops.items():
        kind = kinds[digest]
        _input_count(kind, len(op.inputs), digest, err)
        for i, ref in enumerate(op.inputs):
            n = n_outputs.get(ref.op)
            if n is None or not 0 <= ref.output < n:
                _check_ref(ref, f"{op_path(digest)}.inputs[{i}]", n_outputs, err, alike)
        checks[kind](getattr(op, kind), op, digest, err)
    if not doc.roots:
        err("a document needs at least one root", "roots")
    for name, ref in doc.roots.items():
        _check_ref(ref, f"roots.{name}", n_outputs, err, alike)
    n_sources = len(doc.sources)
    for digest, meta in doc.metadata.items():
        if digest not in doc.ops:
            err("metadata for an op that is not in the document", f"metadata[{short(digest)}]")
        for i, loc in enumerate(meta.locations):
            if not 0 <= loc.file < n_sources:
                err(f"file index {loc.file} out of range ({n_sources} sources)",
                    f"metadata[{short(digest)}].locations[{i}].file")
    used = set(features.used_by(doc.ops))
    for missing in sorted(used - set(doc.features)):
        err(f"feature {missing!r} is used but not declared", "features")
    if not errors:
        _check_acyclic(doc, err)
    return errors


def check_op(op: ops.Op) -> list[IRError]:
    """The checks every reader applies to each op of a graph, for one op that arrives alone (a build
    farm worker's step): its kind's rules, its input count and each mount's input in range.  What
    needs the graph (refs resolving, outputs of the ops it reads, cycles) is the sender's to check."""
    errors: list[IRError] = []

    def err(msg: str, path: str) -> None:
        errors.append(ValidationError(msg, path))

    digest = codec.op_digest(op)
    kind = op.kind
    if kind == "exec":
        _outputs(op, digest, err)
    _input_count(kind, len(op.inputs), digest, err)
    _CHECKS[kind](getattr(op, kind), op, digest, err)
    return errors


def _input_count(kind: str, n_in: int, digest: str, err) -> None:
    lo, hi = INPUT_COUNT[kind]
    if n_in < lo or (hi is not None and n_in > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        article = "an" if kind[0] in "aeiou" else "a"
        err(f"{article} {kind} op takes {want} input(s), has {n_in}", f"{op_path(digest)}.inputs")


def _outputs(op: ops.Op, digest: str, err) -> int:
    outs = [m.output for m in op.exec.mounts if m.output >= 0]
    if outs == [0]:
        return 1
    outs.sort()
    if outs != list(range(len(outs))):
        err(f"mount outputs must be numbered 0..n-1 without gaps or repeats, got {outs}",
            f"{op_path(digest)}.exec.mounts")
    return len(outs)


def _check_ref(ref: ops.Ref, path: str, n_outputs: dict[str, int], err, alike: dict[str, str]) -> None:
    """``alike``: the first op of each short form (``_short_forms``), filled on the first dangling ref."""
    if ref.op not in n_outputs:
        if not alike:
            alike.update(_short_forms(n_outputs))
        near = alike.get(ref.op[:19])
        if near:  # the short forms would look alike: show both digests whole
            err(f"refers to op {ref.op} which is not in the document (an op with the same prefix is "
                f"{near})", f"{path}.op")
        else:
            err(f"refers to op {short(ref.op)} which is not in the document", f"{path}.op")
    elif not 0 <= ref.output < n_outputs[ref.op]:
        err(f"output {ref.output} out of range: that op has {n_outputs[ref.op]} output(s)", f"{path}.output")


def _short_forms(digests) -> dict[str, str]:
    """The first of ``digests`` under each 19-character prefix: one pass, so a hostile graph of
    many dangling refs costs linear time, not refs × ops."""
    out: dict[str, str] = {}
    for d in digests:
        out.setdefault(d[:19], d)
    return out


def clean_abs(path: str) -> bool:
    """Absolute and normalised: no `.`, `..` or empty component (a trailing `/` is allowed)."""
    return path.startswith("/") and (path == "/" or (
        "//" not in path and "/./" not in path and "/../" not in path and not path.endswith(("/.", "/.."))))


def clean_rel(path: str) -> bool:
    """Relative to some root, never climbing out of it (a leading `/` is allowed and means the root)."""
    norm = posixpath.normpath("/" + path)
    return not any(part == ".." for part in path.split("/")) and norm.startswith("/")


class _Checks:
    """One check per op kind: ``(body, op, digest, err)``; paths are built only on errors."""

    @staticmethod
    def source(src: ops.SourceOp, op: ops.Op, digest: str, err) -> None:
        path = f"{op_path(digest)}.source"
        if src.image is not None:
            if not src.image.ref:
                err("image reference is empty", f"{path}.image.ref")
            if src.image.digest and not DIGEST_RE.match(src.image.digest):
                err("not a sha256 digest", f"{path}.image.digest")
        elif src.local is not None and not src.local.name:
            err("local source name is empty", f"{path}.local.name")
        elif src.http is not None:
            if not src.http.url.startswith(("http://", "https://")):
                err("URL must start with http:// or https://", f"{path}.http.url")
            if src.http.checksum and not DIGEST_RE.match(src.http.checksum):
                err("checksum must be a sha256 digest", f"{path}.http.checksum")
            if "/" in src.http.filename or src.http.filename in (".", ".."):
                err("filename must be a single path component", f"{path}.http.filename")
        elif src.git is not None and src.git.subdir and not clean_rel(src.git.subdir):
            err("subdir escapes the checkout", f"{path}.git.subdir")
        elif src.oci_layout is not None and src.oci_layout.digest and not DIGEST_RE.match(src.oci_layout.digest):
            err("not a sha256 digest", f"{path}.oci_layout.digest")
        for kind in ("image", "oci_layout"):
            if getattr(src, kind) is not None:
                _platform(getattr(src, kind).platform, lambda message, sub: err(message, f"{path}.{kind}.{sub}"))
        normal.source_op(src, lambda message, sub: err(message, f"{path}.{sub}"))

    @staticmethod
    def exec(ex: ops.ExecOp, op: ops.Op, digest: str, err) -> None:
        def path() -> str:
            return f"{op_path(digest)}.exec"

        if not ex.args:
            err("args must not be empty", f"{path()}.args")
        if not ex.cwd.startswith("/"):
            err("cwd must be an absolute path", f"{path()}.cwd")
        for i, e in enumerate(ex.env):
            if "=" not in e or e.startswith("="):
                err("environment entries are KEY=value", f"{path()}.env[{i}]")
        mounts = ex.mounts
        if not mounts or mounts[0].target != "/":
            err("the first mount must be the root filesystem at '/'", f"{path()}.mounts")
        n_in = len(op.inputs)
        targets = set()
        for i, m in enumerate(mounts):
            t, target = m.type, m.target
            if not clean_abs(target):
                err(f"mount target must be an absolute, normalised path without '..', got {target!r}",
                    f"{path()}.mounts[{i}].target")
            if target in targets:
                err(f"two mounts at {target}", f"{path()}.mounts[{i}].target")
            targets.add(target)
            if m.input >= n_in or m.input < -1:
                err(f"input {m.input} out of range ({n_in} inputs)", f"{path()}.mounts[{i}].input")
            if m.selector and not clean_rel(m.selector):
                err("selector escapes its input", f"{path()}.mounts[{i}].selector")
            if t == "bind" and m.cache is None and m.tmpfs is None and m.secret is None and m.ssh is None:
                continue  # the common case: nothing else applies
            for opt in ("cache", "tmpfs", "secret", "ssh"):
                if getattr(m, opt) is not None and t != opt:
                    err(f"{opt!r} options on a {t} mount", f"{path()}.mounts[{i}].{opt}")
            if t in ("cache", "secret") and getattr(m, t) is None:
                err(f"a {t} mount needs its {t!r} options", f"{path()}.mounts[{i}]")
            if t in ("tmpfs", "secret", "ssh") and m.input != -1:
                err(f"a {t} mount takes no input", f"{path()}.mounts[{i}].input")
            if t in ("cache", "tmpfs", "secret", "ssh") and m.output != -1:
                err(f"a {t} mount cannot be an output", f"{path()}.mounts[{i}].output")
        if ex.hostname and not ops.HOST_NAME.match(ex.hostname):  # (written into /etc/hosts and /etc/hostname)
            err(f"hostname {ex.hostname[:40]!r} is not letters, digits, '.', '-' and '_' (at most 253)",
                f"{path()}.hostname")
        for i, m in enumerate(mounts):
            for opt in (m.cache, m.secret, m.ssh):
                if opt is not None and not (0 <= opt.uid <= ops.MAX_ID and 0 <= opt.gid <= ops.MAX_ID):
                    err(f"uid/gid {opt.uid}/{opt.gid} out of range (0 to {ops.MAX_ID})", f"{path()}.mounts[{i}]")
        if mounts and mounts[0].type != "bind":
            err("the root mount must be a bind of an input", f"{path()}.mounts[0].type")
        _platform(ex.platform, lambda message, sub: err(message, f"{path()}.{sub}"))
        if ex.extra_hosts or ex.shm_size or ex.ulimits:
            _sandbox(ex, lambda message, sub: err(message, f"{path()}.{sub}"))
            normal.exec_sandbox(ex, lambda message, sub: err(message, f"{path()}.{sub}"))
        normal.exec_op(ex, lambda message, sub: err(message, f"{path()}.{sub}"))

    @staticmethod
    def file(f: ops.FileOp, op: ops.Op, digest: str, err) -> None:
        path = f"{op_path(digest)}.file"
        if f.base >= len(op.inputs) or f.base < -1:
            err(f"base {f.base} out of range ({len(op.inputs)} inputs)", f"{path}.base")
        if not f.actions:
            err("a file op needs at least one action", f"{path}.actions")
        for i, a in enumerate(f.actions):
            ap = f"{path}.actions[{i}]"
            if a.copy is not None:
                c = a.copy
                if not 0 <= c.src < len(op.inputs):
                    err(f"src {c.src} out of range ({len(op.inputs)} inputs)", f"{ap}.copy.src")
                if not clean_rel(c.src_path):
                    err(f"source path escapes its input: {c.src_path!r}", f"{ap}.copy.src_path")
                if not c.dest.startswith("/") or ".." in c.dest.split("/"):
                    err(f"destination must be absolute without '..': {c.dest!r}", f"{ap}.copy.dest")
                if c.chmod and not _valid_chmod(c.chmod):
                    err(f"invalid chmod {c.chmod!r}", f"{ap}.copy.chmod")
            for kind in ("mkfile", "mkdir", "rm", "symlink"):
                act = getattr(a, kind)
                if act is not None and not clean_abs(act.path):
                    err(f"path must be absolute and normalised: {act.path!r}", f"{ap}.{kind}.path")
            for kind in ("mkfile", "mkdir"):
                act = getattr(a, kind)
                if act is not None and not 0 <= act.mode <= 0o7777:
                    err(f"mode {act.mode:#o} out of range", f"{ap}.{kind}.mode")
            normal.file_action(a, lambda message, sub: err(message, f"{ap}.{sub}"))

    @staticmethod
    def merge(m: ops.MergeOp, op: ops.Op, digest: str, err) -> None:
        pass

    @staticmethod
    def diff(d: ops.DiffOp, op: ops.Op, digest: str, err) -> None:
        pass

    @staticmethod
    def image(img: ops.ImageOp, op: ops.Op, digest: str, err) -> None:
        for i, e in enumerate(img.config.env):
            if "=" not in e or e.startswith("="):
                err("environment entries are KEY=value", f"{op_path(digest)}.image.config.env[{i}]")
        _platform(img.platform, lambda message, sub: err(message, f"{op_path(digest)}.image.{sub}"))


def _platform(p: ops.Platform, err) -> None:
    for name in ("os", "architecture", "variant"):
        value = getattr(p, name)
        if (value or name != "variant") and not ops.PLATFORM_PART.match(value):
            err(f"{name} {value[:40]!r} is not a name (letters, digits, '.', '-', '_'; at most 32)",
                f"platform.{name}")


def _sandbox(ex: ops.ExecOp, err) -> None:
    """`extra_hosts`, `shm_size`, `ulimits`: what the runtime writes into /etc/hosts, a mount
    option and setrlimit, so nothing may reach them that those cannot take as one value."""
    for i, h in enumerate(ex.extra_hosts):
        if not ops.HOST_NAME.match(h.host):
            err(f"host name {h.host!r} is not letters, digits, '.', '-' and '_' (at most 253)",
                f"extra_hosts[{i}].host")
        try:
            ipaddress.ip_address(h.ip)
        except ValueError:
            err(f"{h.ip!r} is not an IPv4 or IPv6 address", f"extra_hosts[{i}].ip")
        else:
            if "%" in h.ip:  # `ipaddress` takes anything after it as an IPv6 zone: newlines, tabs, escapes
                err(f"{h.ip!r} has a zone ('%…'): an /etc/hosts address takes none", f"extra_hosts[{i}].ip")
    if not 0 <= ex.shm_size <= ops.MAX_SHM_SIZE:
        err(f"shm size {ex.shm_size} out of range (0 to {ops.MAX_SHM_SIZE} bytes)", "shm_size")
    for i, u in enumerate(ex.ulimits):
        for which in ("soft", "hard"):
            if not -1 <= getattr(u, which) < 1 << 63:
                err(f"{which} limit {getattr(u, which)} out of range (-1 for unlimited, else 0 to 2^63-1)",
                    f"ulimits[{i}].{which}")
        if u.hard != -1 and (u.soft == -1 or u.soft > u.hard):
            err(f"soft limit {u.soft} above the hard limit {u.hard}", f"ulimits[{i}].soft")


_CHECKS = {kind: getattr(_Checks, kind) for kind in ops.OP_KINDS}


# chmod(1) symbolic modes: clauses of [ugoa]* followed by one or more [-+=] actions, each with
# permission letters or a copied class (`go=u`); or 1-4 octal digits.
_CLAUSE = r"[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+"
_CHMOD_RE = re.compile(rf"(?:[0-7]{{1,4}}|{_CLAUSE}(?:,{_CLAUSE})*)\Z")


def _valid_chmod(text: str) -> bool:
    return bool(_CHMOD_RE.match(text))


def _check_acyclic(doc: ops.Document, err) -> None:
    # Every op known to be stored under its own digest (the codec verified it, or the builder
    # computed it): a cycle would need a SHA-256 fixpoint, so there is none to look for.
    if all(op.__dict__.get("_digest") == d for d, op in doc.ops.items()):
        return
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for start in doc.ops:
        if state.get(start):
            continue
        stack = [(start, iter(doc.ops[start].inputs))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            ref = next(it, None)
            if ref is None:
                state[node] = 2
                stack.pop()
                continue
            s = state.get(ref.op)
            if s == 1:
                err("the graph has a cycle through this op", op_path(ref.op))
                return
            if s is None and ref.op in doc.ops:
                state[ref.op] = 1
                stack.append((ref.op, iter(doc.ops[ref.op].inputs)))


# --------------------------------------------------------------------------- entry points


def load_and_validate(data: bytes) -> ops.Document:
    """Untrusted bytes → a valid document, or ``ValidationErrors`` / ``DecodeError`` / ``VersionError``.

    The typed decoder is strict (it accepts exactly what the JSON Schema accepts, and also checks
    canonical form and digests), so the schema itself is not run here: it is for other languages
    and for ``schema_errors``, which the conformance tests hold to the same verdicts.
    """
    doc = codec.load_document(data)
    validate_document(doc)
    return doc


def validate_document(doc: ops.Document) -> None:
    errors = check_graph(doc)
    if errors:
        raise ValidationErrors(errors) if len(errors) > 1 else errors[0]
