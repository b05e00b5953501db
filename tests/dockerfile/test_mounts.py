"""``RUN --mount`` values: keys, aliases, checks and BuildKit's defaults."""

from __future__ import annotations

import pytest

from frontends.common.mounts import MountError, apply_defaults, parse_mount, ram_in_bytes, split_csv
from frontends.dockerfile.parse import parse_dockerfile


def test_default_is_read_only_bind():
    m = parse_mount("target=/src")
    assert (m.type, m.target, m.readonly) == ("bind", "/src", True)


def test_aliases_and_rw():
    m = parse_mount("type=bind,src=/out,dst=/in,from=build,rw")
    assert (m.source, m.target, m.from_, m.readonly) == ("/out", "/in", "build", False)
    assert parse_mount("type=bind,destination=/d,ro=false").readonly is False
    assert parse_mount("type=bind,target=/d,readwrite=true").readonly is False


def test_cache_defaults():
    m = apply_defaults(parse_mount("type=cache,target=/root/.cache"))
    assert (m.id, m.sharing, m.readonly) == ("/root/.cache", "shared", False)
    m = apply_defaults(parse_mount("type=cache,id=apk,target=/var/cache/apk,sharing=locked,mode=0755,uid=1,gid=2"))
    assert (m.id, m.sharing, m.mode, m.uid, m.gid) == ("apk", "locked", 0o755, 1, 2)


def test_secret_defaults():
    m = apply_defaults(parse_mount("type=secret,id=tok"))
    assert (m.id, m.target, m.mode, m.readonly) == ("tok", "/run/secrets/tok", 0o400, True)
    m = apply_defaults(parse_mount("type=secret,target=/etc/npmrc"))
    assert (m.id, m.target) == ("npmrc", "/etc/npmrc")
    m = apply_defaults(parse_mount("type=secret,id=tok,env=TOKEN,required=true"))
    assert (m.env, m.target, m.required) == ("TOKEN", "", True)
    m = apply_defaults(parse_mount("type=secret,source=aws"))
    assert (m.id, m.target) == ("aws", "/run/secrets/aws")


def test_ssh_defaults_count_per_run():
    df = parse_dockerfile("FROM a\nRUN --mount=type=ssh --mount=type=ssh,id=gh,required true\n")
    m0, m1 = df.instructions[1].mounts
    assert (m0.id, m0.target) == ("default", "/run/buildkit/ssh_agent.0")
    assert (m1.id, m1.target, m1.required) == ("gh", "/run/buildkit/ssh_agent.1", True)


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
