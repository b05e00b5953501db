"""Which engine ``--load`` picks for each ``DOCKER_HOST`` (``backend.export.load.find_engine``), and the
streamed docker archive: byte for byte the file ``export_docker`` writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.export.docker import DockerArchive, export_docker
from backend.export.image import ExportOptions, ImageSpec
from backend.export.load import DEFAULT_SOCKET, LoadError, find_engine
from backend.store.blobs import BlobStore


def _bin(tmp_path: Path, *tools: str) -> str:
    d = tmp_path / ("bin-" + "-".join(tools))
    d.mkdir(exist_ok=True)
    for tool in tools:
        (d / tool).write_text("#!/bin/sh\nexit 0\n")
        (d / tool).chmod(0o755)
    return str(d)


def test_tcp_is_plain_http_to_the_api(tmp_path):
    engine = find_engine({"DOCKER_HOST": "tcp://127.0.0.1:2375/", "PATH": _bin(tmp_path)})
    assert (engine.kind, engine.address, engine.where) == ("docker-api", "http://127.0.0.1:2375",
                                                           "Docker at tcp://127.0.0.1:2375/")


def test_tcp_without_a_port_is_dockers_plain_port(tmp_path):
    assert find_engine({"DOCKER_HOST": "tcp://docker.example", "PATH": _bin(tmp_path)}).address == \
        "http://docker.example:2375"


@pytest.mark.parametrize("tls", [{"DOCKER_TLS_VERIFY": "1"}, {"DOCKER_CERT_PATH": "/certs"}])
def test_tls_is_left_to_the_docker_cli(tmp_path, tls):
    env = {"DOCKER_HOST": "tcp://docker.example:2376", **tls}
    assert find_engine({**env, "PATH": _bin(tmp_path, "docker")}).kind == "docker-cli"
    with pytest.raises(LoadError, match=r"^Docker at tcp://docker.example:2376 wants TLS .*none on PATH$"):
        find_engine({**env, "PATH": _bin(tmp_path)})


def test_a_named_engine_is_never_passed_over(tmp_path):
    """podman is on PATH, but the user named a Docker: its absence is the answer."""
    with pytest.raises(LoadError, match=r"^Docker at unix:///nonexistent.sock \(DOCKER_HOST\): no such socket$"):
        find_engine({"DOCKER_HOST": "unix:///nonexistent.sock", "PATH": _bin(tmp_path, "podman")})
    with pytest.raises(LoadError, match=r"^DOCKER_HOST=fd://: unsupported"):
        find_engine({"DOCKER_HOST": "fd://", "PATH": _bin(tmp_path, "podman")})


def test_a_hostile_docker_host_is_quoted_as_one_bounded_line(tmp_path):
    with pytest.raises(LoadError) as e:
        find_engine({"DOCKER_HOST": "evil://" + "a\n#3 DONE\r" * 100, "PATH": _bin(tmp_path)})
    assert "\n" not in str(e.value) and "\r" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.skipif(os.path.exists(DEFAULT_SOCKET), reason=f"{DEFAULT_SOCKET} exists here")
@pytest.mark.parametrize("tools, kind", [(("podman", "skopeo"), "podman"), (("skopeo",), "skopeo")])
def test_without_docker_podman_then_skopeo(tmp_path, tools, kind):
    assert find_engine({"PATH": _bin(tmp_path, *tools)}).kind == kind


def test_the_streamed_archive_is_the_file(tmp_path):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "x").write_bytes(os.urandom(3 << 20))  # several chunks, an odd tail
    (layer / "etc" / "y").write_text("y" * 513)
    store = BlobStore(tmp_path / "store")
    options = ExportOptions(media_types="docker", source_date_epoch=1_700_000_000)
    image = export_docker(ImageSpec(layers=[layer]), store, tmp_path / "a.tar", names=["x:1", "y"], options=options)
    streamed = b"".join(DockerArchive(image, store, ["x:1", "y"], 1_700_000_000).chunks(size=100_000))
    assert streamed == (tmp_path / "a.tar").read_bytes()
