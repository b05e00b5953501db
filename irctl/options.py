"""Parsing of the docker/buildx-compatible option values shared by ``build``, ``compile`` and
``solve``: ``--build-arg``, ``--secret``, ``--ssh``, ``--build-context``, ``--output``.  The command
modules import it at their top, so ``irctl --help`` loads it: what it needs of the frontends and the
backend is imported where used (``# lazy:``)."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from irctl.errors import UserError
from irctl.terminal import printable


def _csv_fields(text: str, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in next(csv.reader([text])):
        key, sep, value = part.partition("=")
        if not sep:
            raise UserError(f"{option} {text!r}: expected key=value pairs, got {part!r}")
        out[key.strip().lower()] = value
    return out


def build_args(values: list[str]) -> dict[str, str]:
    """``K=V`` sets K; a bare ``K`` takes the value of K from the environment (as docker does)."""
    return key_values(values, "--build-arg", from_env=True)


def key_values(values: list[str], option: str, from_env: bool = False) -> dict[str, str]:
    """buildx's ``listToMap``: ``K=V`` sets K, a later one wins; a bare ``K`` is K from the
    environment (``from_env``, left out when unset there) or else an empty value (``--label K``)."""
    out: dict[str, str] = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not k:
            raise UserError(f"{option} {v!r}: missing name")
        if sep or not from_env:
            out[k] = val
        elif k in os.environ:
            out[k] = os.environ[k]
    return out


def check_context(context: Path) -> None:
    """The build context must be a directory: buildx also fetches a git or https URL and reads a tar
    on stdin (``-``), which irctl does not; say so rather than "not a directory"."""
    if context.is_dir():
        return
    shown = re.sub(r"^(https?|git|ssh):/(?!/)", r"\1://", str(context))  # as typed: a Path has one slash left
    if re.match(r"^(https?|git|ssh)://|^[\w.-]+@[\w.-]+:", shown):
        raise UserError(f"build context {shown}: a remote context (git or https URL) is not fetched; "
                        "clone it and pass the directory")
    if shown == "-":
        raise UserError("build context -: a context on stdin is not read; pass a directory "
                        "(-f - reads the build file from stdin)")
    raise UserError(f"build context {context} is not a directory")


def entitlements(values: list[str]):
    """``--allow`` values (buildx's spellings, comma-separated too: a string slice in buildx) as
    ``backend.entitlements.Entitlements``."""
    from backend.entitlements import EntitlementError, parse  # lazy: see the module's docstring

    try:
        return parse([v for item in values for v in item.split(",") if v])
    except EntitlementError as e:
        raise UserError(str(e)) from None


def network(value: str, granted=None) -> str:
    """``--network``: what a step without its own ``RUN --network=`` gets (buildx's flag): ``default`` (a
    private namespace with outbound access), ``none`` (loopback only) or ``host``, which needs ``--allow
    network.host`` (``granted``: the parsed ``--allow``s): said once here rather than once per step by
    the solver's grant check (which still stands for a step's own ``RUN --network=host``)."""
    from ir.ops import NETWORK_MODES  # lazy: ir.ops loads msgspec's structs (~30 ms) that --help never needs

    if value not in NETWORK_MODES:
        raise UserError(f"--network {value!r}: expected one of {', '.join(NETWORK_MODES)}")
    if value == "host" and granted is not None and not granted.network_host:
        raise UserError("--network host gives every step the host's network namespace: pass --allow network.host")
    return value


def secrets(values: list[str]) -> dict[str, bytes]:
    """``id=ID,src=PATH`` / ``id=ID,env=VAR`` / ``id=ID`` (env var ID or file) — values read now.

    Messages never quote a value: only ids, paths and variable names."""
    out: dict[str, bytes] = {}
    for v in values:
        f = _csv_fields(v, "--secret")
        sid = f.get("id")
        src = f.get("src") or f.get("source")
        env = f.get("env")
        if not sid:
            sid = Path(src).name if src else env
        if not sid:
            raise UserError(f"--secret {v!r}: needs id=")
        if src is None and env is None:
            env = sid if sid in os.environ else None
            src = None if env else sid
        if f.get("type") == "env" and env is None:
            env = src
            src = None
        if env is not None:
            if env not in os.environ:
                raise UserError(f"--secret id={sid}: environment variable {env} is not set")
            out[sid] = os.environ[env].encode()
        else:
            try:
                out[sid] = Path(src).expanduser().read_bytes()
            except OSError as e:
                raise UserError(f"--secret id={sid}: cannot read {src}: {e.strerror}") from None
    return out


def ssh_agents(values: list[str]) -> dict[str, Path]:
    """``default`` (uses $SSH_AUTH_SOCK) or ``ID=SOCKET``."""
    out: dict[str, Path] = {}
    for v in values:
        sid, sep, path = v.partition("=")
        if not sep:
            sock = os.environ.get("SSH_AUTH_SOCK")
            if not sock:
                raise UserError(f"--ssh {v}: SSH_AUTH_SOCK is not set; pass --ssh {sid}=/path/to/agent.sock")
            path = sock
        if not Path(path).exists():
            raise UserError(f"--ssh {sid}: no agent socket at {path}")
        out[sid] = Path(path)
    return out


@dataclass
class NamedContexts:
    """``--build-context NAME=VALUE`` sorted into what the frontend sees and what the solver grants."""

    frontend: dict = field(default_factory=dict)  # name -> frontends.NamedContext
    local_dirs: dict[str, Path] = field(default_factory=dict)
    oci_layouts: dict[str, Path] = field(default_factory=dict)


def named_contexts(values: list[str]) -> NamedContexts:
    from frontends import NamedContext  # lazy: see the module's docstring (frontends ~15 ms)

    out = NamedContexts()
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise UserError(f"--build-context {v!r}: expected NAME=VALUE")
        if value.startswith("docker-image://"):
            out.frontend[name] = NamedContext("image", value.removeprefix("docker-image://"))
        elif value.startswith("oci-layout://"):
            rest = value.removeprefix("oci-layout://")
            path, tag = rest, ""
            # oci-layout://PATH[:TAG] or PATH@DIGEST — a colon after the last slash is a tag
            head, _, tail = rest.rpartition("/")
            if "@" in tail:
                tail, _, tag = tail.partition("@")
                path = f"{head}/{tail}" if head else tail
            elif ":" in tail:
                tail, _, tag = tail.partition(":")
                path = f"{head}/{tail}" if head else tail
            if not Path(path).exists():
                raise UserError(f"--build-context {name}: no OCI layout at {path}")
            out.oci_layouts[name] = Path(path).resolve()
            out.frontend[name] = NamedContext("oci_layout", tag)
        elif "://" in value and not value.startswith("file://"):
            raise UserError(f"--build-context {name}: unsupported source {value!r} "
                            "(use a directory, docker-image://REF or oci-layout://PATH)")
        else:
            path = Path(value.removeprefix("file://"))
            if not path.is_dir():
                raise UserError(f"--build-context {name}: {path} is not a directory")
            out.local_dirs[name] = path.resolve()
            out.frontend[name] = NamedContext("local", name)
    return out


STDOUT = "-"  # an output's dest meaning stdout, as buildx


@dataclass(frozen=True)
class Output:
    type: str
    attrs: dict


def outputs(values: list[str], stdout_taken_by: str | None = None) -> list[Output]:
    """buildx ``--output``: ``type=oci,dest=x.tar``, ``type=local,dest=dir``, or a bare ``DIR``.

    As buildx, a bare ``-`` is ``type=tar`` on stdout, and so are ``dest=-`` and an ``oci`` or ``tar``
    output without ``dest`` (a ``docker`` one without it loads: ``irctl.loading``), unless
    ``stdout_taken_by`` says what the command already prints there."""
    out = []
    for v in values:
        if "=" not in v:
            out.append(Output("tar", {"dest": STDOUT}) if v == STDOUT else Output("local", {"dest": v}))
            continue
        f = _csv_fields(v, "--output")
        t = f.pop("type", "local")
        if t not in ("oci", "docker", "registry", "image", "local", "tar"):
            raise UserError(f"--output {v!r}: unknown type {t!r} (oci, docker, registry, local, tar)")
        if t == "image" and f.get("push") != "true":
            raise UserError(f"--output {v!r}: irctl keeps no image store: push=true pushes the image, "
                            "--load puts it into Docker or podman")
        if t == "local" and f.get("dest", STDOUT) == STDOUT:
            raise UserError(f"--output {v!r}: type=local writes a directory; type=tar writes to stdout"
                            if "dest" in f else f"--output {v!r}: type=local needs dest=")
        if t in ("oci", "tar") and not f.get("dest"):
            f["dest"] = STDOUT
        if t == "oci" and f.get("tar") == "false" and f["dest"] == STDOUT:
            raise UserError(f"--output {v!r}: tar=false writes a directory: it needs dest=DIR")
        out.append(Output("registry" if t == "image" and f.get("push") == "true" else t, f))
    on_stdout = [v for v, o in zip(values, out) if o.attrs.get("dest") == STDOUT]
    if on_stdout and stdout_taken_by:
        raise UserError(f"--output {on_stdout[0]}: stdout already carries {stdout_taken_by}; give dest=FILE")
    if sum(o.attrs.get("dest") == STDOUT for o in out) > 1:
        raise UserError("--output: only one output can be written to stdout (dest=-)")
    if any(o.attrs.get("dest") == STDOUT for o in out) and sys.stdout.isatty():
        raise UserError("--output: refusing to write an archive to the terminal; redirect stdout or give dest=FILE")
    return out


def print_explanation(record, progress: str) -> None:
    """``--explain``: why each step that ran missed the cache, on stderr after the progress output
    (one JSON object per step with ``--progress json``)."""
    from backend.solve.explain import explain, format_text  # lazy: only with --explain

    if record is None:  # the cache store's record dir could not be used
        print("explain: no build record could be kept in the cache store", file=sys.stderr)
        return
    found = explain(record)
    if progress == "json":
        for x in found:
            print(json.dumps({"kind": "explain", "description": x.description, "reasons": list(x.reasons)}),
                  file=sys.stderr)
        return
    for line in format_text(record, found):
        print(printable(line), file=sys.stderr)
