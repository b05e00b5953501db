"""One image, three languages, one graph.

Each folder of ``cases/`` holds the same build as a ``Dockerfile``, a TOML recipe (``irctl.toml``)
and a Python DSL file (``build.py``).  All three must compile to the same ops — hence the same
root digest, image config and history — because they lower through the same stage functions
(``frontends/common/stage.py``); only the metadata (descriptions, source map) differs, and each
frontend's source map points into its own file.  End to end, the solver builds the image once:
after the Dockerfile build, the TOML and Python builds are all cache hits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from frontends import BuildRequest
from frontends.dockerfile import FRONTEND as DOCKERFILE
from frontends.pydsl import FRONTEND as PYDSL
from frontends.toml import FRONTEND as TOML
from ir.validate import validate_document
from tests.support.cli import irctl, run_image
from tests.support.resolver import FakeResolver

HERE = Path(__file__).parent
CASES = sorted(p for p in (HERE / "cases").iterdir() if p.is_dir())
FILES = {"Dockerfile": (DOCKERFILE, "dockerfile"), "irctl.toml": (TOML, "toml"), "build.py": (PYDSL, "python")}


def compile_all(case: Path, **request) -> dict:
    out = {}
    for name, (frontend, _language) in FILES.items():
        doc = frontend.compile(BuildRequest((case / name).read_bytes(), filename=name, **request), FakeResolver()).document
        validate_document(doc)
        out[name] = doc
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_root_digest_and_ops(case: Path):
    docs = compile_all(case)
    roots = {name: doc.roots["default"] for name, doc in docs.items()}
    assert len(set(roots.values())) == 1, roots
    ops = {name: doc.ops for name, doc in docs.items()}
    assert ops["irctl.toml"] == ops["Dockerfile"]
    assert ops["build.py"] == ops["Dockerfile"]
    assert len({doc.features for doc in docs.values()}) == 1


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_source_map_points_into_its_own_file(case: Path):
    for name, doc in compile_all(case).items():
        assert [(s.name, s.language) for s in doc.sources] == [(name, FILES[name][1])]
        lines = (case / name).read_text().splitlines()
        for digest, op in doc.ops.items():
            if op.source is not None and op.source.local is not None:
                continue  # the build context is no line's doing
            meta = doc.metadata.get(digest)
            assert meta is not None and meta.locations, (name, op.kind)
            for loc in meta.locations:
                assert loc.file == 0 and 1 <= loc.line <= len(lines), (name, loc)
                assert lines[loc.line - 1].strip(), (name, loc)


def test_image_config_and_history_match():
    docs = compile_all(HERE / "cases" / "everything")
    images = {name: doc.ops[doc.roots["default"].op].image for name, doc in docs.items()}
    ref = images["Dockerfile"]
    assert ref.config.healthcheck is not None and ref.config.exposed_ports == ("53/udp", "8080/tcp")
    assert [h.created_by for h in ref.history][-3:] == [
        'HEALTHCHECK &{["CMD-SHELL" "wget -q -O- http://localhost:8080/"] "30s" "3s" "0s" "0s" \'\\x03\'}',
        'ENTRYPOINT ["/bin/server"]', 'CMD ["/bin/sh" "-c" "serve --port 8080"]']
    for name, image in images.items():
        assert image == ref, name


def test_build_args_change_all_three_alike():
    plain = compile_all(HERE / "cases" / "everything")
    changed = compile_all(HERE / "cases" / "everything", build_args={"VERSION": "2.0", "BASE": "debian:12"})
    assert len({d.roots["default"] for d in changed.values()}) == 1
    assert changed["Dockerfile"].roots != plain["Dockerfile"].roots
    refs = {op.source.image.ref for op in changed["build.py"].ops.values() if op.source and op.source.image}
    assert "docker.io/library/debian:12" in refs


def test_exec_options_and_labels_reach_every_run_alike():
    """--add-host, --shm-size, --ulimit land in every exec op, --label on the target's image (over
    its LABEL), the same in the three languages (the pydsl request crosses its sandbox's pipe)."""
    from ir import ops

    hosts, limits = (ops.HostIP("db", "10.0.0.7"), ops.HostIP("db6", "fd00::7")), (ops.Ulimit("nofile", 1024, 4096),)
    case = HERE / "cases" / "everything"
    plain = compile_all(case)
    shaped = compile_all(case, extra_hosts=hosts, shm_size=128 << 20, ulimits=limits,
                          labels={"maintainer": "me", "x": "y"})
    assert len({d.roots["default"] for d in shaped.values()}) == 1
    assert shaped["Dockerfile"].roots != plain["Dockerfile"].roots
    for name, doc in shaped.items():
        execs = [op.exec for op in doc.ops.values() if op.exec is not None]
        assert execs and all((e.extra_hosts, e.shm_size, e.ulimits) == (hosts, 128 << 20, limits) for e in execs), name
        labels = dict(doc.ops[doc.roots["default"].op].image.config.labels)
        before = dict(plain[name].ops[plain[name].roots["default"].op].image.config.labels)
        assert labels == {**before, "maintainer": "me", "x": "y"}, name
    assert before["maintainer"] != "me"  # the case's own MAINTAINER label, overridden


def test_targets_select_the_same_stage():
    docs = {}
    for name, (frontend, _) in FILES.items():
        target = {"Dockerfile": "tools", "irctl.toml": "tools", "build.py": "tools"}[name]
        src = (HERE / "cases" / "everything" / name).read_bytes()
        if name == "build.py":
            src += b'\ntargets["tools"] = tools\n'
        docs[name] = frontend.compile(BuildRequest(src, filename=name, target=target), FakeResolver()).document
    assert len({d.roots["default"] for d in docs.values()}) == 1


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_solver_builds_it_once(tmp_path, busybox_layout):
    case = HERE / "cases" / "app"
    token = tmp_path / "token"
    token.write_text("s3cr3t")
    env = {"IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    common = ["--build-context", f"busybox=oci-layout://{busybox_layout}", "--secret", f"id=token,src={token}",
              "--progress", "json"]
    runs = {}
    for name in FILES:
        out = tmp_path / f"image-{name}"
        r = irctl("build", case, "-f", case / name, *common, "--output", f"type=oci,tar=false,dest={out}",
                  "-t", "eq:latest", "--ir-out", tmp_path / f"{name}.ir", env=env)
        assert r.code == 0, r.stderr
        runs[name] = r
    first, second, third = runs.values()
    assert len([e for e in first.events() if e["kind"] == "started"]) >= 3
    for later in (second, third):
        assert [e for e in later.events() if e["kind"] == "started"] == []
        assert len([e for e in later.events() if e["kind"] == "cached"]) >= 3
    from ir.codec import load_document

    roots = {load_document((tmp_path / f"{name}.ir").read_bytes()).roots["default"] for name in FILES}
    assert len(roots) == 1
    assert run_image(tmp_path / "image-build.py", "latest", tmp_path) == "hello from greet.sh\n"


def test_the_examples_are_one_image():
    """examples/hello (Dockerfile), examples/recipe (TOML) and examples/pydsl (Python) are the same graph."""
    examples = HERE.parent.parent / "examples"
    files = {"Dockerfile": examples / "hello" / "Dockerfile", "irctl.toml": examples / "recipe" / "irctl.toml",
             "build.py": examples / "pydsl" / "build.py"}
    roots = {frontend_name: FILES[frontend_name][0].compile(
        BuildRequest(path.read_bytes(), filename=path.name), FakeResolver()).document.roots["default"]
        for frontend_name, path in files.items()}
    assert len(set(roots.values())) == 1, roots
