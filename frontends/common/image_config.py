"""The image config a Dockerfile stage builds up, and the history lines BuildKit writes for it.

A stage starts from its base image's OCI config (Env, WorkingDir, User, Shell, OnBuild, history,
…) and every metadata instruction edits it.  :class:`ImageState` is that mutable record; it
becomes an :class:`ir.ops.ImageConfig` plus history at the end.  The history texts follow
``dockerfile2llb`` byte for byte (``RUN /bin/sh -c make # buildkit``, ``EXPOSE map[80/tcp:{}]``,
``CMD ["/bin/sh" "-c" "x"]``), because ``docker history`` users read them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from frontends.common.gostrings import go_char, go_duration, go_quote, go_quoted_list
from ir import ops

HISTORY_COMMENT = "buildkit.dockerfile.v0"
DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ImageState:
    env: list[str] = field(default_factory=list)
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)
    stop_signal: str = ""
    healthcheck: ops.Healthcheck | None = None
    shell: list[str] = field(default_factory=list)
    on_build: list[str] = field(default_factory=list)
    history: list[ops.HistoryEntry] = field(default_factory=list)
    os: str = "linux"
    platform: ops.Platform | None = None  # what the config says it is built for, when it says

    @classmethod
    def from_oci(cls, blob: dict | None) -> "ImageState":
        """From an OCI/Docker image config JSON (``{"config": {...}, "history": [...]}``)."""
        blob = blob or {}
        c = blob.get("config") or {}
        hc = c.get("Healthcheck")
        health = None
        if hc:
            health = ops.Healthcheck(tuple(hc.get("Test") or ()), int(hc.get("Interval") or 0),
                                     int(hc.get("Timeout") or 0), int(hc.get("StartPeriod") or 0),
                                     int(hc.get("StartInterval") or 0), int(hc.get("Retries") or 0))
        history = [ops.HistoryEntry(h.get("created_by", ""), h.get("comment", ""), h.get("created", ""),
                                    bool(h.get("empty_layer", False))) for h in blob.get("history") or ()]
        return cls(env=list(c.get("Env") or ()), cmd=_opt_list(c.get("Cmd")),
                   entrypoint=_opt_list(c.get("Entrypoint")), working_dir=c.get("WorkingDir") or "",
                   user=c.get("User") or "", labels=dict(c.get("Labels") or {}),
                   exposed_ports=set(c.get("ExposedPorts") or {}), volumes=set(c.get("Volumes") or {}),
                   stop_signal=c.get("StopSignal") or "", healthcheck=health, shell=list(c.get("Shell") or ()),
                   on_build=list(c.get("OnBuild") or ()), history=history, os=blob.get("os") or "linux",
                   platform=ops.Platform(blob["os"], blob["architecture"], blob.get("variant") or "")
                   if blob.get("os") and blob.get("architecture") else None)

    def clone(self) -> "ImageState":
        return copy.deepcopy(self)

    # -- edits ------------------------------------------------------------------------------
    def get_env(self, key: str) -> str | None:
        for e in self.env:
            k, _, v = e.partition("=")
            if k == key:
                return v
        return None

    def set_env(self, key: str, value: str) -> None:
        """BuildKit ``addEnv``: replace in place, else append."""
        for i, e in enumerate(self.env):
            if e.partition("=")[0] == key:
                self.env[i] = f"{key}={value}"
                return
        self.env.append(f"{key}={value}")

    def ensure_path(self) -> None:
        if self.get_env("PATH") is None:
            self.env.append("PATH=" + DEFAULT_PATH)

    def with_shell(self, args: tuple[str, ...] | list[str]) -> list[str]:
        """Shell form: the stage's SHELL (default ``/bin/sh -c``) plus the joined command."""
        return [*(self.shell or DEFAULT_SHELL), " ".join(args)]

    def commit(self, created_by: str, layer: bool, buildkit_suffix: bool = False) -> None:
        """BuildKit ``commitToHistory``: `` # buildkit`` marks steps that produced a state."""
        text = created_by + (" # buildkit" if buildkit_suffix else "")
        self.history.append(ops.HistoryEntry(created_by=text, comment=HISTORY_COMMENT, empty_layer=not layer))

    def to_ir(self) -> ops.ImageConfig:
        return ops.ImageConfig(
            env=tuple(self.env), cmd=tuple(self.cmd or ()), entrypoint=tuple(self.entrypoint or ()),
            working_dir=self.working_dir, user=self.user, labels=dict(self.labels),
            exposed_ports=tuple(self.exposed_ports), volumes=tuple(self.volumes), stop_signal=self.stop_signal,
            healthcheck=self.healthcheck, shell=tuple(self.shell), on_build=tuple(self.on_build))


def _opt_list(v) -> list[str] | None:
    return None if v is None else list(v)


def is_empty_image(blob: dict | None) -> bool:
    """An image without layers is scratch (BuildKit: no diff ids and only empty history)."""
    if not blob:
        return False
    diff_ids = (blob.get("rootfs") or {}).get("diff_ids")
    if diff_ids is None or diff_ids:
        return False
    return all(h.get("empty_layer") for h in blob.get("history") or ())


def healthcheck_history(h: ops.Healthcheck) -> str:
    """``fmt.Sprintf("HEALTHCHECK %q", &HealthcheckConfig{...})``."""
    durs = " ".join(go_quote(go_duration(d)) for d in (h.interval, h.timeout, h.start_period, h.start_interval))
    return f"HEALTHCHECK &{{{go_quoted_list(h.test)} {durs} {go_char(h.retries)}}}"


# --------------------------------------------------------------------------- EXPOSE


class PortError(ValueError):
    pass


def parse_port_specs(specs: list[str]) -> set[str]:
    """docker/go-connections ``nat.ParsePortSpecs``: the container ports, ``80/tcp`` style."""
    out: set[str] = set()
    for raw in specs:
        spec = raw
        proto = "tcp"
        if "/" in spec:
            spec, proto = spec.rsplit("/", 1)
            proto = proto.lower()
            if proto not in ("tcp", "udp", "sctp"):
                raise PortError(f"invalid proto: {proto}")
        if spec.startswith("["):  # [ipv6]:host:container
            end = spec.find("]")
            spec = spec[end + 1:].lstrip(":")
        container = spec.split(":")[-1]
        if not container:
            raise PortError(f"no port specified: {raw}<empty>")
        lo, dash, hi = container.partition("-")
        try:
            start = int(lo)
            end = int(hi) if dash else start
        except ValueError:
            raise PortError(f"invalid containerPort: {container}") from None
        if not (0 <= start <= 65535 and 0 <= end <= 65535) or end < start:
            raise PortError(f"invalid containerPort: {container}")
        for p in range(start, end + 1):
            out.add(f"{p}/{proto}")
    return out


def expose_history(ports: set[str]) -> str:
    """``fmt.Sprintf("EXPOSE %v", map[nat.Port]struct{})``: Go prints maps sorted by key."""
    return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(ports)) + "]"


# --------------------------------------------------------------------------- STOPSIGNAL

_SIGNALS = ("ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV "
            "STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU UNUSED URG USR1 USR2 VTALRM WINCH XCPU XFSZ").split()


def valid_signal(sig: str) -> bool:
    """moby/sys ``signal.ParseSignal``: a number, or a name with or without ``SIG``."""
    if sig.isdigit():
        return int(sig) > 0
    name = sig.upper().removeprefix("SIG")
    if name.startswith("RTMIN") or name.startswith("RTMAX"):
        rest = name[5:]
        return rest == "" or (rest[0] in "+-" and rest[1:].isdigit())
    return name in _SIGNALS
