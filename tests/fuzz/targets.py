"""Fuzz targets shared by the quick suite (``tests/fuzz/test_fuzz.py``) and the long runs
(``benchmarks/fuzz_run.py``): each takes bytes and either returns or raises one of the
target's *clear* errors — anything else (another exception, or running past ``DEADLINE``) is a
finding.

* ``dockerfile``: ``parse_dockerfile`` then the compiler to IR (in-memory image resolver), and the
  compiled graph must pass ``validate_document`` — a compiler emitting an invalid graph is a bug.
* ``ir``: ``ir.validate.load_and_validate``; on success the graph must render (``irctl dump``); the
  fast msgspec load must accept exactly what the strict reference decoder accepts.
* ``toml``: ``frontends.toml.recipe.read_recipe`` then lowering to IR, validated like the above.
"""

from __future__ import annotations

import contextlib
import io
import signal
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 5  # seconds one input may take


class Finding(Exception):
    """A fuzz input that ended in neither a result nor a clear error."""


class Hang(BaseException):
    pass


@contextlib.contextmanager
def deadline(seconds: int = DEADLINE):
    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------ resolvers

class FakeResolver:
    """Every image exists, with a small config; no network."""

    def resolve_image(self, ref, platform):
        from frontends import ResolvedImage

        return ResolvedImage(ref if "/" in ref else f"docker.io/library/{ref}", "sha256:" + "a" * 64,
                             {"config": {"Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/"},
                              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
                              "os": platform.os, "architecture": platform.architecture}, platform)

    def resolve_oci_layout(self, name, ref, platform):
        from frontends import ResolvedImage

        return ResolvedImage(ref, "sha256:" + "c" * 64, {"config": {}}, platform)


# ------------------------------------------------------------------------------------ targets

def _check_compiled(compiled) -> None:
    from ir.errors import IRError
    from ir.validate import validate_document

    try:
        validate_document(compiled.document)
    except IRError as e:
        raise Finding(f"the compiler emitted an invalid graph: {e}") from e


def dockerfile(data: bytes) -> None:
    from frontends import BuildRequest, FrontendError
    from frontends import errors as ferrors
    from frontends.dockerfile import FRONTEND
    from frontends.dockerfile.parse import parse_dockerfile

    text = data.decode("utf-8", "replace")
    clear = (ferrors.FrontendError, FrontendError)
    with deadline():
        try:
            parse_dockerfile(text)
        except clear:
            return
        except Exception as e:
            raise Finding(f"parse_dockerfile raised {type(e).__name__}: {e}") from e
        try:
            compiled = FRONTEND.compile(BuildRequest(data), FakeResolver())
        except clear:
            return
        except Exception as e:
            raise Finding(f"compile raised {type(e).__name__}: {e}") from e
        _check_compiled(compiled)


def ir(data: bytes) -> None:
    from ir.errors import IRError
    from ir.validate import load_and_validate

    with deadline():
        _fast_load_agrees(data)
        try:
            doc = load_and_validate(data)
        except IRError:
            return
        except Exception as e:
            raise Finding(f"load_and_validate raised {type(e).__name__}: {e}") from e
        try:
            from ir import render

            render.to_dot(doc)
            memo: dict = {}
            for digest, op in doc.ops.items():
                render.summary(op)
                render.env_changes(doc, digest, memo)
            render.stage_order(doc, render.topo_order(doc, sorted(doc.ops)))
        except ImportError:
            pass
        except Exception as e:
            raise Finding(f"a valid graph does not render: {type(e).__name__}: {e}") from e


def _fast_load_agrees(data: bytes) -> None:
    """msgspec's canonical load (``ir.codec``) accepts exactly what the strict reference decoder
    accepts, and both make the same document."""
    from ir import codec
    from ir.errors import IRError

    try:
        fast = codec._load_canonical(codec.unframe(data))
    except IRError:
        return
    try:
        slow = codec.load_document_strict(data)
    except IRError:
        slow = None
    if (fast is None) != (slow is None) or fast != slow:
        raise Finding(f"the fast load {'accepts' if fast is not None else 'refuses'} what the reference decoder "
                      f"{'accepts' if slow is not None else 'refuses'}")


def ir_memory(data: bytes) -> None:
    """``ir.limits``: the estimate bounds what decoding allocates.  When the limits let the bytes
    through, the load (fast msgspec path, then the strict reference decoder) may allocate at most
    the estimate plus the file and two copies of the payload (tracemalloc's peak); the limits
    refuse with a located ``DecodeError``."""
    import tracemalloc

    from ir import codec, limits
    from ir.errors import IRError

    with deadline():
        try:
            payload = codec.unframe(data)
        except IRError:
            return
        bound = limits.estimate(payload) + len(data) + 2 * len(payload) + (1 << 20)
        tracemalloc.start()
        try:
            try:
                codec.load_document(data)
            except IRError:
                pass
            except Exception as e:
                raise Finding(f"load_document raised {type(e).__name__}: {e}") from e
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if peak > bound:
            raise Finding(f"decoding allocated {peak} bytes, over the estimate's bound {bound}")


def toml(data: bytes) -> None:
    from frontends import BuildRequest, FrontendError
    from frontends import errors as ferrors

    try:
        from frontends.toml import TomlFrontend
        from frontends.toml.recipe import read_recipe
    except ImportError:  # the TOML frontend is not there yet
        return
    text = data.decode("utf-8", "replace")
    clear = (ferrors.FrontendError, FrontendError)
    with deadline():
        try:
            read_recipe(text)
        except clear:
            return
        except Exception as e:
            raise Finding(f"read_recipe raised {type(e).__name__}: {e}") from e
        try:
            compiled = TomlFrontend().compile(BuildRequest(data, filename="irctl.toml"), FakeResolver())
        except clear:
            return
        except Exception as e:
            raise Finding(f"compile raised {type(e).__name__}: {e}") from e
        _check_compiled(compiled)


TARGETS = {"dockerfile": dockerfile, "ir": ir, "ir_memory": ir_memory, "toml": toml}


# ------------------------------------------------------------------------------------ seeds

def dockerfile_seeds() -> list[bytes]:
    paths = sorted((ROOT / "tests" / "dockerfile").rglob("Dockerfile*"))
    paths += sorted(Path("/work/shared/corpus").rglob("Dockerfile*"))[:60]
    return [p.read_bytes() for p in paths if p.is_file()][:120] or [b"FROM busybox\nRUN echo hi\n"]


def toml_seeds() -> list[bytes]:
    paths = sorted((ROOT / "tests" / "toml").rglob("*.toml")) + sorted((ROOT / "examples").rglob("*.toml"))
    return [p.read_bytes() for p in paths if p.is_file()] or [b'[image]\nfrom = "busybox"\n']


def ir_seeds() -> list[bytes]:
    """Valid graphs: the Dockerfile golden cases compiled, each compressed and not."""
    from frontends import BuildRequest
    from frontends.dockerfile import FRONTEND
    from ir.codec import dump_document

    out = []
    for p in sorted((ROOT / "tests" / "dockerfile" / "golden_ir").glob("*/Dockerfile")):
        with contextlib.suppress(Exception):
            doc = FRONTEND.compile(BuildRequest(p.read_bytes()), FakeResolver()).document
            out.append(dump_document(doc, compress=False))
            out.append(dump_document(doc))
    return out


SEEDS = {"dockerfile": dockerfile_seeds, "ir": ir_seeds, "ir_memory": ir_seeds, "toml": toml_seeds}


# ------------------------------------------------------------------------------------ IR mutation

def ir_payload(data: bytes) -> tuple[bytes, object] | None:
    """(header, raw map) of an uncompressed or zstd IR file."""
    from ir.codec import HEADER, load_payload

    with contextlib.suppress(Exception):
        return data[: HEADER.size], load_payload(data)[1]
    return None


def ir_encode(raw, *, redigest: bool) -> bytes:
    """An uncompressed IR file of ``raw`` (canonical when the shapes allow), digests fixed if asked."""
    import hashlib

    from ir.codec import HEADER, MAGIC, VERSION

    if redigest and isinstance(raw, dict) and isinstance(raw.get("ops"), dict):
        for _ in range(64):
            moved = False
            for digest, op in list(raw["ops"].items()):
                with contextlib.suppress(Exception):
                    real = "sha256:" + hashlib.sha256(msgpack.packb(op, use_bin_type=True)).hexdigest()
                    if real != digest:
                        raw = _rename(raw, digest, real)
                        moved = True
                        break
            if not moved:
                break
    raw = _sorted(raw)
    return HEADER.pack(MAGIC, VERSION, 0, 0) + msgpack.packb(raw, use_bin_type=True)


def _rename(obj, old, new):
    if isinstance(obj, dict):
        return {_rename(k, old, new): _rename(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename(v, old, new) for v in obj]
    return new if obj == old else obj


def _sorted(obj):
    if isinstance(obj, dict):
        try:
            keys = sorted(obj, key=lambda k: k.encode() if isinstance(k, str) else repr(k).encode())
        except Exception:
            keys = list(obj)
        return {k: _sorted(obj[k]) for k in keys}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def paths_of(obj, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths_of(v, prefix + (i,))
    return out


def set_path(obj, path: tuple, value, delete: bool = False):
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and parent:
            parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return obj


def regression_inputs() -> list[tuple[str, Path]]:
    """``tests/fuzz/regressions/<target>-<name>``: inputs that once were findings."""
    d = Path(__file__).parent / "regressions"
    return [(p.name.split("-", 1)[0], p) for p in sorted(d.iterdir()) if p.is_file() and "-" in p.name]


def run_quiet(target: str, data: bytes) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        TARGETS[target](data)
