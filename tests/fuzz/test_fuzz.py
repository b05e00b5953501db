"""Quick fuzzing (bounded hypothesis runs) of the three readers of untrusted text: the Dockerfile
parser and compiler, the IR decoder and validator, and the TOML recipe reader.  Every input must
end in a result or the reader's clear error, within ``targets.DEADLINE``.  Longer runs, and
coverage-guided ones with atheris: ``python benchmarks/fuzz_run.py``.  Inputs that were once
findings live in ``regressions/`` and are replayed here."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import targets as T

QUICK = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DOCKERFILE_WORDS = [
    b"FROM ", b"RUN ", b"COPY ", b"ADD ", b"ARG ", b"ENV ", b"ONBUILD ", b"WORKDIR ", b"USER ", b"SHELL ",
    b"HEALTHCHECK ", b"--mount=type=cache,target=", b"--mount=type=secret,id=s,env=E", b"--mount=type=bind,from=",
    b"--from=", b"--chmod=", b"--chown=", b"--link", b"--parents", b"--network=none", b"--security=insecure",
    b"<<EOF\n", b"EOF\n", b"\\\n", b"${A:-b}", b"$A", b"../", b"/", b"*", b"[", b"]", b"\"", b"'", b"\n", b" AS ",
    b"# syntax=x\n", b"# escape=`\n", b"\x00", b"\xff", b"\xef\xbb\xbf", b"=", b",", b"scratch", b"busybox",
]
TOML_WORDS = [
    b"[image]\n", b"[[stage]]\n", b"[[step]]\n", b"from = ", b"run = ", b"copy = ", b"mounts = ", b"type = ",
    b"\"cache\"", b"\"secret\"", b"target = ", b"\"/x\"", b"\"../..\"", b"[", b"]", b"{", b"}", b"= ", b"\"",
    b"'''", b"\"\"\"", b"1", b"-1", b"1e999", b"true", b"\n", b".", b"#", b"\\u0000", b"${x}", b"nan", b"inf",
]


def mutated(seeds: list[bytes], words: list[bytes]):
    """A seed with up to 8 edits: flips, deletions, duplications, insertions of words or bytes, splices."""
    @st.composite
    def strategy(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            op = draw(st.integers(0, 5))
            at = draw(st.integers(0, len(data)))
            if op == 0 and data:
                data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:
                del data[at:at + draw(st.integers(1, 64))]
            elif op == 2:
                data[at:at] = draw(st.sampled_from(words))
            elif op == 3:
                data[at:at] = draw(st.binary(max_size=16))
            elif op == 4:
                end = min(len(data), at + draw(st.integers(1, 200)))
                data[at:at] = data[at:end] * draw(st.integers(1, 4))
            else:
                other = draw(st.sampled_from(seeds))
                cut = draw(st.integers(0, len(other)))
                data = data[:at] + bytearray(other[cut:])
        return bytes(data)
    return strategy()


@functools.cache
def seeds(target: str) -> list[bytes]:
    return T.SEEDS[target]()


def check(target: str, data: bytes) -> None:
    try:
        T.TARGETS[target](data)
    except T.Hang as e:
        raise T.Finding(f"{target}: hang: {e}") from None


@QUICK
@given(st.data())
def test_dockerfile_mutations(data):
    check("dockerfile", data.draw(mutated(seeds("dockerfile"), DOCKERFILE_WORDS)))


@QUICK
@given(st.lists(st.sampled_from(DOCKERFILE_WORDS), max_size=40).map(b"".join))
def test_dockerfile_from_words(data):
    check("dockerfile", b"FROM busybox\n" + data)


@QUICK
@given(st.data())
def test_toml_mutations(data):
    check("toml", data.draw(mutated(seeds("toml"), TOML_WORDS)))


@QUICK
@given(st.data())
def test_ir_byte_mutations(data):
    check("ir", data.draw(mutated(seeds("ir"), [b"\x00", b"\xff", b"\xc0", b"\x90", b"\x80", b"\xdf\xff\xff\xff\xff"])))


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=20)
    | st.sampled_from(["..", "/", "../../etc", "/a/../..", "sha256:" + "0" * 64, "exec", "bind", "cache", "secret",
                       "insecure", "none", "", "\x00"]) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


@QUICK
@given(st.data())
def test_ir_structure_mutations(data):
    """Decode a valid graph, change values anywhere (type, range, paths, deletions), re-encode it
    canonically with the op digests fixed — so the input gets past the framing into validation."""
    seed = data.draw(st.sampled_from(seeds("ir")))
    _, raw = T.ir_payload(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        paths = T.paths_of(raw)
        path = data.draw(st.sampled_from(paths))
        if data.draw(st.booleans()) and path:
            raw = T.set_path(raw, path, None, delete=True)
        else:
            raw = T.set_path(raw, path, data.draw(VALUES))
    try:
        encoded = T.ir_encode(raw, redigest=data.draw(st.booleans()))
    except (TypeError, ValueError, OverflowError):  # msgpack cannot carry it at all
        return
    check("ir", encoded)


def test_ir_deep_nesting_is_refused():
    from ir.codec import HEADER, MAGIC, VERSION

    deep = b"\x91" * 200_000 + b"\xc0"
    check("ir", HEADER.pack(MAGIC, VERSION, 0, 0) + b"\x81\xa3ops" + deep)


@pytest.mark.parametrize("target,path", T.regression_inputs(), ids=lambda x: getattr(x, "name", x))
def test_regressions(target, path):
    check(target, path.read_bytes())


# Tokens whose decoded objects are many times their size, and wrappers that make them pass as
# much of the schema as possible: the memory estimate of ``ir.limits`` must stay an upper bound.
TINY_TOKENS = [b"\x90", b"\x80", b"\xc0", b"\xe0", b"\xcd\x01\x00", b"\xa2ab", b"\xa3a=b", b"\xd4\x01\x00",
               b"\x81\xa6target\xa1/", b"\x91\x90", b"\x81\xa1k\x80", b"\xc4\x00", b"\xcb" + b"\x00" * 8]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=st.sampled_from(TINY_TOKENS), n=st.integers(0, 200_000), wrap=st.integers(0, 4),
       compress=st.booleans())
def test_ir_memory_estimate_bounds_decoding(token, n, wrap, compress):
    from tests.security import hostile_ir as H

    items = H.array_of(n, token)
    marker = "MARK" * 8
    shapes = [items,
              H.splice(H.doc({"exec": {"args": marker, "mounts": [{"target": "/"}]}}), msgpack_str(marker), items),
              H.splice(H.doc({"exec": {"args": ["sh"], "mounts": marker}}), msgpack_str(marker), items),
              H.splice(H.doc({"file": {"actions": marker}}), msgpack_str(marker), items),
              H.splice(H.doc({"image": {"history": marker}}), msgpack_str(marker), items)]
    check("ir_memory", H.frame(shapes[wrap], compress=compress))


def msgpack_str(text: str) -> bytes:
    import msgpack

    return msgpack.packb(text)
