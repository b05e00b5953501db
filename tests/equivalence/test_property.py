"""Property: any build made of the shared step kinds, written as a Dockerfile, a TOML recipe and a
Python build file, compiles to one root digest.

Hypothesis draws a few stages (from an image or an earlier stage) of random steps — ENV, LABEL,
ARG, WORKDIR, USER, RUN (shell and exec form, cache/secret/tmpfs/bind mounts, network), COPY
(context or another stage, chown, chmod, link), EXPOSE, VOLUME, STOPSIGNAL, CMD, ENTRYPOINT —
and renders the same build in the three languages.  The values are plain words, so no quoting
rule of one language is being tested against another's; what is tested is that the lowering is
one and the same.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontends import BuildRequest
from frontends.dockerfile import FRONTEND as DOCKERFILE
from frontends.pydsl import FRONTEND as PYDSL
from frontends.toml import FRONTEND as TOML
from tests.support.resolver import FakeResolver

word = st.from_regex(r"[a-z][a-z0-9._-]{0,6}", fullmatch=True)
key = st.from_regex(r"[A-Z][A-Z0-9_]{0,4}", fullmatch=True)
path = word.map(lambda w: "/" + w)
rel_or_abs = st.one_of(path, word)


def step(earlier: int):
    stage_ref = st.integers(0, earlier - 1).map(lambda i: f"s{i}") if earlier else st.nothing()
    mount = st.one_of(
        st.fixed_dictionaries({"type": st.just("cache"), "target": path},
                              optional={"id": word, "sharing": st.sampled_from(["shared", "private", "locked"])}),
        st.fixed_dictionaries({"type": st.just("secret"), "id": word}, optional={"required": st.just(True)}),
        st.fixed_dictionaries({"type": st.just("tmpfs"), "target": path}),
        st.fixed_dictionaries({"type": st.just("bind"), "target": path}, optional={"source": word}),
    )
    copy = st.fixed_dictionaries({"kind": st.just("copy"), "src": word, "dest": st.one_of(path, path.map(lambda p: p + "/"))},
                                 optional={"from": stage_ref, "chown": word, "chmod": st.sampled_from(["0644", "0755"]),
                                           "link": st.just(True)})
    return st.one_of(
        st.fixed_dictionaries({"kind": st.just("env"), "pairs": st.lists(st.tuples(key, word), min_size=1, max_size=2, unique_by=lambda p: p[0])}),
        st.fixed_dictionaries({"kind": st.just("label"), "pairs": st.lists(st.tuples(word, word), min_size=1, max_size=2, unique_by=lambda p: p[0])}),
        st.fixed_dictionaries({"kind": st.just("arg"), "name": key}, optional={"default": word}),
        st.fixed_dictionaries({"kind": st.just("workdir"), "value": rel_or_abs}),
        st.fixed_dictionaries({"kind": st.just("user"), "value": word}),
        st.fixed_dictionaries({"kind": st.just("run"), "cmd": st.one_of(word.map(lambda w: f"echo {w}"),
                                                                        st.lists(word, min_size=1, max_size=3))},
                              optional={"mounts": st.lists(mount, max_size=2, unique_by=lambda m: m.get("target", m.get("id"))),
                                        "network": st.sampled_from(["none", "host"])}),
        copy,
        st.fixed_dictionaries({"kind": st.just("expose"), "value": st.integers(1, 65535)}),
        st.fixed_dictionaries({"kind": st.just("volume"), "value": path}),
        st.fixed_dictionaries({"kind": st.just("stopsignal"), "value": st.sampled_from(["SIGTERM", "SIGINT", "9"])}),
        st.fixed_dictionaries({"kind": st.just("cmd"), "value": st.one_of(word, st.lists(word, min_size=1, max_size=3))}),
        st.fixed_dictionaries({"kind": st.just("entrypoint"), "value": st.lists(word, min_size=1, max_size=2)}),
    )


@st.composite
def builds(draw):
    stages = []
    for i in range(draw(st.integers(1, 3))):
        base = draw(st.sampled_from(["alpine", "busybox"] + [f"s{j}" for j in range(i)]))
        steps = draw(st.lists(step(i), max_size=6))
        stages.append((f"s{i}", base, steps))
    return stages


# --------------------------------------------------------------------------- renderers


def _mount_csv(m: dict) -> str:
    m = {"type": m["type"], **m}  # the type first: the Dockerfile checks later keys against it
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in m.items())


def dockerfile(stages) -> str:
    out = []
    for name, base, steps in stages:
        out.append(f"FROM {base} AS {name}")
        for s in steps:
            k = s["kind"]
            if k in ("env", "label"):
                out.append(f"{k.upper()} " + " ".join(f"{a}={b}" for a, b in s["pairs"]))
            elif k == "arg":
                out.append(f"ARG {s['name']}" + (f"={s['default']}" if "default" in s else ""))
            elif k in ("workdir", "user", "stopsignal", "volume", "expose"):
                out.append(f"{k.upper()} {s['value']}")
            elif k == "run":
                flags = [f"--mount={_mount_csv(m)}" for m in s.get("mounts", ())]
                if "network" in s:
                    flags.append(f"--network={s['network']}")
                cmd = s["cmd"] if isinstance(s["cmd"], str) else json.dumps(s["cmd"])
                out.append(" ".join(["RUN", *flags, cmd]))
            elif k == "copy":
                flags = [f"--{o}={s[o]}" for o in ("from", "chown", "chmod") if o in s]
                if s.get("link"):
                    flags.append("--link")
                out.append(" ".join(["COPY", *flags, s["src"], s["dest"]]))
            elif k in ("cmd", "entrypoint"):
                v = s["value"]
                out.append(f"{k.upper()} " + (v if isinstance(v, str) else json.dumps(v)))
    return "\n".join(out) + "\n"


def toml(stages) -> str:
    out = []
    for name, base, steps in stages:
        out.append(f'[stages.{name}]\nfrom = "{base}"\n')
        for s in steps:
            k = s["kind"]
            out.append(f"[[stages.{name}.steps]]")
            if k in ("env", "label"):
                out.append(f"{k} = {{ " + ", ".join(f'"{a}" = "{b}"' for a, b in s["pairs"]) + " }")
            elif k == "arg":
                out.append(f'arg = "{s["name"]}"' + (f'\ndefault = "{s["default"]}"' if "default" in s else ""))
            elif k == "expose":
                out.append(f"expose = {s['value']}")
            elif k in ("workdir", "user", "stopsignal", "volume"):
                out.append(f'{k} = "{s["value"]}"')
            elif k == "run":
                out.append(f"run = {json.dumps(s['cmd'])}")
                if "network" in s:
                    out.append(f'network = "{s["network"]}"')
                if s.get("mounts"):
                    out.append("mounts = [" + ", ".join(
                        "{ " + ", ".join(f"{a} = {json.dumps(b)}" for a, b in m.items()) + " }" for m in s["mounts"]) + "]")
            elif k == "copy":
                out.append(f'copy = "{s["src"]}"\ndest = "{s["dest"]}"')
                for o in ("from", "chown", "chmod"):
                    if o in s:
                        out.append(f'{o} = "{s[o]}"')
                if s.get("link"):
                    out.append("link = true")
            elif k in ("cmd", "entrypoint"):
                out.append(f"{k} = {json.dumps(s['value'])}")
            out.append("")
    return "\n".join(out) + "\n"


def pydsl(stages) -> str:
    out = ["from frontends.pydsl import bind, cache, image, secret, target, tmpfs", ""]
    helpers = {"cache": "cache", "secret": "secret", "tmpfs": "tmpfs", "bind": "bind"}
    for name, base, steps in stages:
        start = f'{base}.stage("{name}")' if base.startswith("s") else f'image("{base}", name="{name}")'
        chain = [f"{name} = ({start}"]
        for s in steps:
            k = s["kind"]
            if k in ("env", "label"):
                chain.append(f"    .{k}({dict(s['pairs'])!r})")
            elif k == "arg":
                chain.append(f"    .arg({s['name']!r}" + (f", {s['default']!r})" if "default" in s else ")"))
            elif k == "expose":
                chain.append(f"    .expose({s['value']})")
            elif k in ("workdir", "user", "stopsignal", "volume"):
                chain.append(f"    .{k}({s['value']!r})")
            elif k == "run":
                mounts = []
                for m in s.get("mounts", ()):
                    m = dict(m)
                    t = m.pop("type")
                    if t == "secret":
                        mounts.append(f"secret({m.pop('id')!r}" + "".join(f", {a}={b!r}" for a, b in m.items()) + ")")
                    else:
                        mounts.append(f"{helpers[t]}({m.pop('target')!r}" + "".join(f", {a}={b!r}" for a, b in m.items()) + ")")
                extra = f", mounts=[{', '.join(mounts)}]" if mounts else ""
                extra += f", network={s['network']!r}" if "network" in s else ""
                chain.append(f"    .run({s['cmd']!r}{extra})")
            elif k == "copy":
                opts = "".join(f", {o}={s[o]!r}" for o in ("chown", "chmod") if o in s)
                opts += f", from_={s['from']}" if "from" in s else ""
                opts += ", link=True" if s.get("link") else ""
                chain.append(f"    .copy({s['src']!r}, {s['dest']!r}{opts})")
            elif k in ("cmd", "entrypoint"):
                chain.append(f"    .{k}({s['value']!r})")
        chain[-1] += ")"
        out.extend(chain)
    out.append(f'target("default", {stages[-1][0]})')
    return "\n".join(out) + "\n"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(builds())
def test_three_languages_one_root_digest(stages):
    texts = {"Dockerfile": (DOCKERFILE, dockerfile(stages)), "irctl.toml": (TOML, toml(stages)),
             "build.py": (PYDSL, pydsl(stages))}
    docs = {name: fe.compile(BuildRequest(text.encode(), filename=name), FakeResolver()).document
            for name, (fe, text) in texts.items()}
    ref = docs["Dockerfile"]
    for name, doc in docs.items():
        assert doc.roots == ref.roots, (name, texts[name][1], texts["Dockerfile"][1])
        assert doc.ops == ref.ops, name
