"""``RUN --mount`` values: keys, aliases, checks and BuildKit's defaults."""

from __future__ import annotations

import pytest

import frontends
from frontends.common.errors import ExpandError
from frontends.common.mounts import (MountError, cache_id, mount_from_options, parse_mount, ram_in_bytes,
                                     split_csv)
from frontends.common.stage import lower_mount
from frontends.dockerfile.parse import parse_dockerfile
from frontends.errors import SourceError
from ir import builder, ops


def test_default_is_read_only_bind():
    m = parse_mount("target=/src")
    assert (m.type, m.target, m.readonly) == ("bind", "/src", True)


def test_aliases_and_rw():
    m = parse_mount("type=bind,src=/out,dst=/in,from=build,rw")
    assert (m.source, m.target, m.from_, m.readonly) == ("/out", "/in", "build", False)
    assert parse_mount("type=bind,destination=/d,ro=false").readonly is False
    assert parse_mount("type=bind,target=/d,readwrite=true").readonly is False


def defaulted(value: str) -> ops.Mount:
    """``value`` read with BuildKit's defaults and lowered at WORKDIR /w: the exec op's mount."""
    spec = parse_mount(value, ssh_index=0)
    return lower_mount("/w", spec, lambda name: builder.scratch(), builder.scratch).mount


def test_cache_defaults():
    m = defaulted("type=cache,target=/root/.cache")
    assert (m.cache.id, m.cache.sharing, m.readonly) == ("/root/.cache", "shared", False)
    m = defaulted("type=cache,id=apk,target=/var/cache/apk,sharing=locked,mode=0755,uid=1,gid=2")
    assert (m.cache.id, m.cache.sharing, m.cache.mode, m.cache.uid, m.cache.gid) == ("apk", "locked", 0o755, 1, 2)


@pytest.mark.parametrize("value,expected", [
    ("type=cache,target=/root/.cache/", "/root/.cache"),  # the target as written, cleaned
    ("type=cache,target=cache/../c", "c"),  # relative: not joined to the WORKDIR
    ("type=cache", "."),
    ("type=cache,id=,target=c/", "c/"),  # an empty id= is the target as written
    ("type=cache,id=", "/w"),  # … or, none written, the mount point
    ("type=cache,id=x,target=/c", "x"),
])
def test_cache_id(value, expected):
    assert defaulted(value).cache.id == expected
    assert cache_id(parse_mount(value, ssh_index=0), "/w") == expected


def test_secret_defaults():
    m = defaulted("type=secret,id=tok")
    assert (m.secret.id, m.target, m.secret.mode) == ("tok", "/run/secrets/tok", 0o400)
    assert parse_mount("type=secret,id=tok").readonly is True
    m = defaulted("type=secret,target=/etc/npmrc")
    assert (m.secret.id, m.target) == ("npmrc", "/etc/npmrc")
    m = parse_mount("type=secret,id=tok,env=TOKEN,required=true", ssh_index=0)
    assert (m.env, m.target, m.required) == ("TOKEN", "", True)
    m = defaulted("type=secret,source=aws")
    assert (m.secret.id, m.target) == ("aws", "/run/secrets/aws")


def test_ssh_defaults_count_per_run():
    df = parse_dockerfile("FROM a\nRUN --mount=type=ssh --mount=type=ssh,id=gh,required true\n")
    m0, m1 = df.instructions[1].mounts
    assert (m0.id, m0.target) == ("", "/run/buildkit/ssh_agent.0")
    assert (m1.id, m1.target, m1.required) == ("gh", "/run/buildkit/ssh_agent.1", True)
    assert defaulted("type=ssh").ssh == ops.SSHOptions("default", mode=0o600)


def test_tmpfs_size():
    assert parse_mount("type=tmpfs,target=/t,size=64m").size == 64 * 1024 * 1024
    assert ram_in_bytes("1.5g") == int(1.5 * 1024**3) and ram_in_bytes("100") == 100


def test_variables_are_deferred_until_expansion():
    m = parse_mount("type=cache,target=$DIR,mode=$MODE")
    assert m.deferred == ("target", "mode") and m.target == "$DIR" and m.mode is None
    m = parse_mount("type=cache,target=$DIR,mode=$MODE", expand=lambda v: {"$DIR": "/c", "$MODE": "0700"}[v])
    assert (m.target, m.mode, m.deferred) == ("/c", 0o700, ())
    with pytest.raises(MountError, match="doesn't support variable expansion"):
        parse_mount("type=bind,from=$STAGE,target=/x")


def test_csv_fields():
    assert [f for f, _ in split_csv('a=1,"b=2,3",,"c=""q"""')] == ["a=1", "b=2,3", "", 'c="q"']


@pytest.mark.parametrize(
    "value,message",
    [
        ("type=cache,targte=/x", "unexpected key 'targte' in 'targte=/x' (did you mean target?)"),
        ("type=volume,target=/x", 'unsupported mount type "volume"'),
        ("required,type=secret,id=x", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,target=/x,uid=1", 'uid not allowed for "bind" type mounts'),
        ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
        ("type=cache,target=/x,sharing=everyone", 'unsupported sharing value "everyone"'),
        ("type=secret,id=a,source=b", "both source and id can't be set"),
        ("type=secret,from=x,id=a", "secret mount should not have a from"),
        ("type=tmpfs,target=/t,size=lots", "invalid value for size: lots"),
        ("type=bind,target=/x,ro=maybe", "invalid value for ro: maybe"),
        ("type=bind,target=/x,exec", "invalid field 'exec' must be a key=value pair"),
        ("type=bind,env=X,target=/x", "unexpected key 'env' for mount type 'bind'"),
        ("", "failed to parse csv mounts: EOF"),
    ],
)
def test_errors(value, message):
    with pytest.raises(MountError) as info:
        parse_mount(value)
    assert info.value.message.startswith(message)


@pytest.mark.parametrize("type_,options,text", [
    ("cache", [("target", "/c"), ("mode", 0o700), ("uid", 1), ("readonly", True), ("sharing", "locked")],
     "type=cache,target=/c,mode=700,uid=1,readonly=true,sharing=locked"),
    ("tmpfs", [("target", "t"), ("size", 1 << 20)], "type=tmpfs,target=t,size=1048576"),
    ("tmpfs", [("size", "64m")], "type=tmpfs,size=64m"),
    ("secret", [("id", "a,b"), ("required", True), ("env", "T")], 'type=secret,"id=a,b",required=true,env=T'),
    ("bind", [("from", "st"), ("source", "/x"), ("readwrite", True)], "type=bind,from=st,source=/x,readwrite=true"),
    ("ssh", [("id", "gh")], "type=ssh,id=gh"),
])
def test_recipe_options_read_as_the_flag_text(type_, options, text):
    """A recipe's typed options (TOML, Python DSL) mean what the same ``--mount`` text means."""
    assert mount_from_options(type_, options, str, ssh_index=1) == parse_mount(text, ssh_index=1)


@pytest.mark.parametrize("type_,options,key,message", [
    ("cache", [("target", "/c"), ("mode", 1 << 32)], "mode", "invalid value 40000000000 for mode"),
    ("cache", [("target", "/c"), ("mode", -1)], "mode", "invalid value -1 for mode"),
    ("cache", [("target", "/c"), ("mode", "0999")], "mode", "invalid value 0999 for mode"),
    ("cache", [("uid", True)], "uid", "invalid value true for uid"),
    ("tmpfs", [("size", "lots")], "size", "invalid value for size: lots"),
    ("bind", [("uid", 1)], "uid", 'uid not allowed for "bind" type mounts'),
    ("bind", [("required", True)], "required", "unexpected key 'required' for mount type 'bind'"),
    ("secret", [("id", "a"), ("source", "b")], "id", "both source and id can't be set"),
    ("secret", [], "type", "invalid secret mount. one of source, target required"),
    ("cache", [("sharing", "all")], "sharing", 'unsupported sharing value "all"'),
])
def test_recipe_option_errors_name_the_key(type_, options, key, message):
    with pytest.raises(MountError) as info:
        mount_from_options(type_, options, str, ssh_index=0)
    assert (info.value.key, info.value.message.split(" (did")[0]) == (key, message)


def test_recipe_values_are_expanded_not_deferred():
    seen = []
    m = mount_from_options("cache", [("target", "$D"), ("mode", "$M")], lambda v: seen.append(v) or "0700",
                           ssh_index=0)
    assert (m.target, m.mode, m.deferred, seen) == ("0700", 0o700, (), ["$D", "$M"])


def test_mount_errors_are_the_error_irctl_catches():
    """One FrontendError: a bad mount escaping a compiler is reported, never a traceback."""
    for error in (MountError, ExpandError, SourceError):
        assert issubclass(error, frontends.FrontendError)
