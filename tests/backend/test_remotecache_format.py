"""The shared cache's document and options, read as hostile input: ``parse`` refuses every malformed
document with a message naming the field, and round-trips what ``to_bytes`` wrote; ``--cache-from``
/ ``--cache-to`` values parse to buildx's meanings and defaults, and refuse what irctl cannot do."""

from __future__ import annotations

import copy
import json

import pytest

from backend.oci.pull import RemoteLayer
from backend.remotecache.format import FORMAT_VERSION, MAX_CONFIG, MAX_LAYERS, MAX_RECORDS, CacheConfig, \
    CacheFormatError, parse
from backend.remotecache.options import CacheExport, CacheImport, CacheOptionError, parse_cache_from, \
    parse_cache_to
from backend.store.records import Output

D = ["sha256:" + c * 64 for c in "0123456789abcdef"]
LAYER = RemoteLayer(D[1], "application/vnd.oci.image.layer.v1.tar+gzip", 123, D[2], "sde=1700000000")
GOOD = CacheConfig(
    platform={"os": "linux", "architecture": "amd64"},
    records={D[3]: (Output(D[4], (D[5], D[0]), {"config": {"Env": ["A=1"]}, "history": [], "platform": {}},
                           (1, None)),),
             D[6]: (Output(D[7], (D[5],), None, ()), Output(D[8], (), None, ()))},
    selections={(D[9], "ab" * 32): D[10], (D[11], "cd" * 32): "missing:" + "e" * 64},
    layers={D[0]: LAYER},
    mounts={"/var/cache/apt": RemoteLayer(D[12], "application/vnd.oci.image.layer.v1.tar+zstd", 9, D[13], "")})


def good() -> dict:
    return copy.deepcopy(GOOD.to_json())


def refused(doc: dict | bytes, where: str, why: str = "") -> str:
    with pytest.raises(CacheFormatError) as e:
        parse(doc if isinstance(doc, bytes) else json.dumps(doc).encode(), "R")
    msg = str(e.value)
    assert msg.startswith("R: ") and where in msg and why in msg, msg
    assert "\n" not in msg
    return msg


def test_round_trip_is_exact():
    raw = GOOD.to_bytes()
    back = parse(raw, "R")
    assert back == GOOD
    assert back.to_bytes() == raw
    assert parse(json.loads(raw), "R") == GOOD  # an inline cache hands the object itself


def test_canonical_bytes_do_not_depend_on_insertion_order():
    shuffled = CacheConfig(dict(reversed(GOOD.platform.items())), dict(reversed(GOOD.records.items())),
                           dict(reversed(GOOD.selections.items())), GOOD.layers, GOOD.mounts)
    assert shuffled.to_bytes() == GOOD.to_bytes()


def test_an_empty_document_of_this_version_is_an_empty_cache():
    assert parse(json.dumps({"irctl_cache": FORMAT_VERSION}).encode(), "R") == CacheConfig()


@pytest.mark.parametrize("raw, why", [
    (b"", "not JSON"), (b"{", "not JSON"), (b"\xff\xfe", "not JSON"), (b"[" * 100_000, "not JSON"),
    (b"[]", "document: expected an object"), (b'"x"', "document: expected an object"),
])
def test_not_a_document(raw, why):
    refused(raw, why)


def test_a_huge_document_is_refused_before_parsing():
    refused(b" " * (MAX_CONFIG + 1), f"at most {MAX_CONFIG}")


@pytest.mark.parametrize("version", [None, 2, 0, "1", 1.0, True])
def test_another_version(version):
    doc = good()
    if version is None:
        del doc["irctl_cache"]
    else:
        doc["irctl_cache"] = version
    refused(doc, "cache format", "another irctl version")


def _set(doc: dict, path: list, value) -> dict:
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize("path, value, where", [
    (["platform"], [], "platform"),
    (["platform", "os"], 5, "platform.os"),
    (["platform", "os"], "li\x00nux", "platform.os"),
    (["records"], {}, "records"),
    (["records", 0], "x", "records[0]"),
    (["records", 0, "key"], "sha256:XYZ", "records[0].key"),
    (["records", 0, "key"], "md5:" + "0" * 32, "records[0].key"),
    (["records", 0, "key"], "sha256:" + "A" * 64, "records[0].key"),
    (["records", 0, "outputs"], None, "records[0].outputs"),
    (["records", 0, "outputs", 0], [], "records[0].outputs[0]"),
    (["records", 0, "outputs", 0, "identity"], 7, "records[0].outputs[0].identity"),
    (["records", 0, "outputs", 0, "layers"], "sha256:" + "0" * 64, "records[0].outputs[0].layers"),
    (["records", 0, "outputs", 0, "layers", 1], "../../etc", "records[0].outputs[0].layers[1]"),
    (["records", 0, "outputs", 0, "image"], [], "records[0].outputs[0].image"),
    (["records", 0, "outputs", 0, "image", "config"], "x", "records[0].outputs[0].image.config"),
    (["records", 0, "outputs", 0, "image", "history"], {}, "records[0].outputs[0].image.history"),
    (["records", 0, "outputs", 0, "image", "history"], ["x"], "records[0].outputs[0].image.history[0]"),
    (["records", 0, "outputs", 0, "image", "config", "Env"], 5, "records[0].outputs[0].image.config.Env"),
    (["records", 0, "outputs", 0, "image", "config", "Env"], "A=1", "records[0].outputs[0].image.config.Env"),
    (["records", 0, "outputs", 0, "image", "config", "Cmd"], ["sh", 5], "records[0].outputs[0].image.config.Cmd"),
    (["records", 0, "outputs", 0, "image", "config", "WorkingDir"], ["/"], "records[0].outputs[0].image.config.WorkingDir"),
    (["records", 0, "outputs", 0, "image", "config", "User"], 0, "records[0].outputs[0].image.config.User"),
    (["records", 0, "outputs", 0, "image", "config", "Labels"], {"a": 1}, "records[0].outputs[0].image.config.Labels"),
    (["records", 0, "outputs", 0, "image", "config", "ExposedPorts"], ["80/tcp"],
     "records[0].outputs[0].image.config.ExposedPorts"),
    (["records", 0, "outputs", 0, "image", "config", "Volumes"], {"/v": 1}, "records[0].outputs[0].image.config.Volumes"),
    (["records", 0, "outputs", 0, "image", "platform", "os"], 5, "records[0].outputs[0].image.platform.os"),
    (["records", 0, "outputs", 0, "image", "platform"], "linux", "records[0].outputs[0].image.platform"),
    (["records", 0, "outputs", 0, "created"], "now", "records[0].outputs[0].created"),
    (["records", 0, "outputs", 0, "created"], [1.5, None], "records[0].outputs[0].created"),
    (["records", 0, "outputs", 0, "created"], [True, None], "records[0].outputs[0].created"),
    (["records", 0, "outputs", 0, "created"], [10 ** 30, None], "records[0].outputs[0].created"),
    (["records", 0, "outputs", 0, "created"], [-1, None], "records[0].outputs[0].created"),
    (["selections"], {}, "selections"),
    (["selections", 0], "x", "selections[0]"),
    (["selections", 0], [D[9], "ab"], "selections[0]"),
    (["selections", 0], [D[9], "ab", D[10], "extra"], "selections[0]"),
    (["selections", 0, 0], "sha256:1", "selections[0][0]"),
    (["selections", 0, 1], "", "selections[0][1]"),
    (["selections", 0, 1], 5, "selections[0][1]"),
    (["selections", 0, 1], "a\nb", "selections[0][1]"),
    (["selections", 0, 1], "a\x7fb", "selections[0][1]"),
    (["selections", 0, 1], "x" * 5000, "selections[0][1]"),
    (["selections", 0, 2], "sha512:" + "0" * 64, "selections[0][2]"),
    (["selections", 0, 2], None, "selections[0][2]"),
    (["layers"], "x", "layers"),
    (["layers", 0], "x", "layers[0].id"),
    (["layers", 0, "id"], "sha256:0", "layers[0].id"),
    (["layers", 0, "blob"], None, "layers[0].blob"),
    (["layers", 0, "diff_id"], "sha256:" + "g" * 64, "layers[0].diff_id"),
    (["layers", 0, "size"], -1, "layers[0].size"),
    (["layers", 0, "size"], 0, "layers[0].size"),
    (["layers", 0, "size"], "123", "layers[0].size"),
    (["layers", 0, "size"], True, "layers[0].size"),
    (["layers", 0, "size"], 1.0, "layers[0].size"),
    (["layers", 0, "size"], 1 << 60, "layers[0].size"),
    (["layers", 0, "mediaType"], "", "layers[0].mediaType"),
    (["layers", 0, "mediaType"], "a\tb", "layers[0].mediaType"),
    (["layers", 0, "variant"], 5, "layers[0].variant"),
    (["layers", 0, "variant"], "v" * 65, "layers[0].variant"),
    (["mounts", 0, "id"], "", "mounts[0].id"),
    (["mounts", 0, "id"], "/var\x1b[31m", "mounts[0].id"),
    (["mounts", 0, "blob"], "sha256:" + "0" * 63, "mounts[0].blob"),
])
def test_a_malformed_field_is_refused_where_it_is(path, value, where):
    refused(_set(good(), path, value), where)


@pytest.mark.parametrize("field, limit", [("records", MAX_RECORDS), ("selections", MAX_RECORDS),
                                          ("layers", MAX_LAYERS), ("mounts", 1000)])
def test_too_many_entries(field, limit):
    doc = good()
    doc[field] = [0] * (limit + 1)
    refused(doc, field, f"at most {limit}")


def test_too_many_outputs_and_layers_per_result():
    doc = good()
    doc["records"][0]["outputs"] = [doc["records"][0]["outputs"][0]] * 65
    refused(doc, "records[0].outputs", "at most 64")
    doc = good()
    doc["records"][0]["outputs"][0]["layers"] = [D[0]] * 1001
    doc["records"][0]["outputs"][0].pop("created")
    refused(doc, "records[0].outputs[0].layers", "at most 1000")


def test_deep_json_inside_an_image_config_is_refused_not_a_crash():
    deep = b'{"irctl_cache":1,"records":[{"key":"' + D[3].encode() + b'","outputs":[{"identity":"' + \
        D[4].encode() + b'","layers":[],"image":{"config":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}}]}]}"
    refused(deep, "not JSON")


def test_lone_surrogates_are_refused():
    """JSON can spell a lone surrogate (\\ud800), which no UTF-8 document can hold: writing such a
    cache again (``to_bytes``) would fail, so reading it does."""
    doc = good()
    doc["records"][0]["outputs"][0]["image"]["config"]["Env"] = ["A=\ud800"]
    raw = json.dumps(doc).encode()  # ensure_ascii: the surrogate is an escape
    refused(raw, "records[0].outputs[0].image", "not valid Unicode")
    doc = good()
    doc["selections"][0][1] = "\udcff"
    refused(json.dumps(doc).encode(), "selections[0][1]", "not valid Unicode")
    doc = good()
    doc["platform"]["o\udcffs"] = "x"
    assert "platform.o\\udcffs: not valid Unicode" in refused(doc, "platform")


def test_an_image_config_as_docker_writes_it_is_read():
    doc = good()
    config = {"Env": ["PATH=/bin"], "Cmd": None, "Entrypoint": None, "Labels": None, "Volumes": None,
              "ExposedPorts": {"80/tcp": {}}, "WorkingDir": "", "User": "0:0", "ArgsEscaped": True,
              "Healthcheck": {"Test": ["NONE"]}, "OnBuild": None, "Shell": ["/bin/sh", "-c"], "StopSignal": "SIGTERM"}
    doc["records"][0]["outputs"][0]["image"] = {"config": config, "history": [{"created_by": "x", "empty_layer": True}],
                                                "platform": {"os": "linux", "os.features": ["win32k"]}}
    back = parse(json.dumps(doc).encode(), "R")
    assert back.records[D[3]][0].image["config"] == config


def test_a_duplicated_key_keeps_one_and_round_trips():
    doc = good()
    doc["records"].append(doc["records"][0])
    assert parse(json.dumps(doc).encode(), "R") == GOOD


# -- options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("reg.example/app:cache", CacheImport("registry", ref="reg.example/app:cache")),
    ("type=registry,ref=reg.example/app:cache", CacheImport("registry", ref="reg.example/app:cache")),
    ("ref=reg.example/app:cache", CacheImport("registry", ref="reg.example/app:cache")),
    ("type=local,src=/tmp/c", CacheImport("local", path="/tmp/c", tag="latest")),
    ("src=/tmp/c,tag=pr-7", CacheImport("local", path="/tmp/c", tag="pr-7")),
    ("TYPE=local, SRC=/tmp/c", CacheImport("local", path="/tmp/c")),
])
def test_cache_from(text, want):
    assert parse_cache_from(text) == want


FROM_ERRORS = [
    ("type=gha", "type 'gha' is not supported (irctl supports registry, local)"),
    ("type=s3,bucket=b", "type 's3' is not supported"),
    ("type=inline", "type 'inline' is not supported"),
    ("type=registry", "type=registry needs ref="),
    ("type=local", "type=local needs src="),
    ("type=local,dest=/tmp/c", "type=local needs src="),
    ("type=registry,ref", "expected key=value pairs"),
    ("type=registry,ref=r/a:c,mode=max", "unknown attribute 'mode'"),
    ("type=local,src=/c,digest=sha256:00", "unknown attribute 'digest'"),
]


def test_cache_to_defaults():
    assert parse_cache_to("type=registry,ref=r/a:c") == CacheExport(
        "registry", ref="r/a:c", mode="min", compression="gzip", level=None, oci_mediatypes=True,
        ignore_error=False, mounts=(), insecure=False)
    assert parse_cache_to("type=local,dest=/c") == CacheExport("local", path="/c", tag="latest")
    assert parse_cache_to("type=inline") == CacheExport("inline")
    assert parse_cache_to("dest=/c").type == "local"


@pytest.mark.parametrize("text, field, value", [
    ("type=registry,ref=r/a:c,mode=max", "mode", "max"),
    ("type=registry,ref=r/a:c,mode=min", "mode", "min"),
    ("type=registry,ref=r/a:c,compression=zstd", "compression", "zstd"),
    ("type=registry,ref=r/a:c,compression=uncompressed", "compression", "none"),
    ("type=registry,ref=r/a:c,compression=gzip,compression-level=9", "level", 9),
    ("type=registry,ref=r/a:c,compression=zstd,compression-level=22", "level", 22),
    ("type=registry,ref=r/a:c,compression=uncompressed,compression-level=99", "level", 99),  # no compressor uses it
    ("type=registry,ref=r/a:c,oci-mediatypes=false", "oci_mediatypes", False),
    ("type=registry,ref=r/a:c,oci-mediatypes=true", "oci_mediatypes", True),
    ("type=registry,ref=r/a:c,ignore-error=true", "ignore_error", True),
    ("type=registry,ref=r/a:c,ignore-error=1", "ignore_error", True),
    ("type=registry,ref=r/a:c,ignore-error=false", "ignore_error", False),
    ("type=registry,ref=r/a:c,registry.insecure=true", "insecure", True),
    ("type=local,dest=/c,tag=pr-7", "tag", "pr-7"),
    ('type=registry,ref=r/a:c,"mounts=/var/cache/apt,/root/.npm"', "mounts", ("/var/cache/apt", "/root/.npm")),
    ("type=registry,ref=r/a:c,mounts=/a,mounts=/b,mounts=/a", "mounts", ("/a", "/b")),
    ("type=local,dest=/c,mounts=*", "mounts", ("*",)),
    ("type=registry,ref=r/a:c,force-compression=true,image-manifest=true", "mode", "min"),  # accepted, no effect
])
def test_cache_to_attributes(text, field, value):
    assert getattr(parse_cache_to(text), field) == value


TO_ERRORS = [
    ("type=gha", "type 'gha' is not supported (irctl supports registry, local, inline)"),
    ("type=inline,mode=max", "mode=max needs type=registry or type=local"),
    ("type=inline,mounts=/a", "type=inline cannot carry cache mounts"),
    ("type=registry,ref=r/a:c,mode=all", "mode='all': expected min or max"),
    ("type=registry,ref=r/a:c,compression=brotli", "expected gzip, zstd or uncompressed"),
    ("type=registry,ref=r/a:c,compression-level=high", "not a number"),
    ("type=registry,ref=r/a:c,compression-level=10", "compression-level=10: gzip takes 0 to 9"),
    ("type=registry,ref=r/a:c,compression=zstd,compression-level=23", "zstd takes 0 to 22"),
    ("type=registry,ref=r/a:c,compression-level=-1", "gzip takes 0 to 9"),
    ("type=registry,ref=r/a:c,ignore-error=maybe", "ignore-error='maybe': expected true or false"),
    ("type=registry,ref=r/a:c,oci-mediatypes=yes", "oci-mediatypes='yes'"),
    ("type=registry,ref=r/a:c,colour=blue", "unknown attribute 'colour'"),
    ("type=local,src=/c", "unknown attribute 'src'"),
    ("type=registry", "type=registry needs ref="),
    ("type=registry,ref=", "type=registry needs ref="),
]


@pytest.mark.parametrize("parser, text, why", [(parse_cache_from, *c) for c in FROM_ERRORS] +
                         [(parse_cache_to, *c) for c in TO_ERRORS])
def test_option_errors_are_one_line_naming_the_value(parser, text, why):
    with pytest.raises(CacheOptionError) as e:
        parser(text)
    assert why in str(e.value) and "\n" not in str(e.value)
