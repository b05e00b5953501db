"""Where the shared Dockerfile corpus is, and which of its cases need a special policy.

CI clones the repository with ``../shared`` beside it, so the corpus is found relative to this file.
Every test that needs it skips (with the reason) when it is absent.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

import pytest

CORPUS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()
BUILDKIT = CORPUS / "buildkit-parser" / "frontend" / "dockerfile"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")

#: Cases where the oracle (asottile's binding of BuildKit v0.12.5) differs from BuildKit itself
#: because of the binding, not the parser.  Reason per file.
BINDING_GAPS = {
    "buildkit-parser/frontend/dockerfile/parser/testfiles/json/Dockerfile":
        "binding cuts strings at NUL; BuildKit keeps \\u0000 (see ORACLE-AGREEMENT.tsv)",
    "probes/json-nul-character.Dockerfile":
        "binding cuts strings at NUL; BuildKit keeps \\u0000",
}


def dockerfiles_with_oracle() -> list[Path]:
    """Every Dockerfile of the corpus that has a ``.parse.json`` beside it, sorted."""
    if not CORPUS.is_dir():
        return []
    return sorted(p.with_name(p.name[: -len(".parse.json")]) for p in CORPUS.rglob("*.parse.json"))


def rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


@lru_cache(maxsize=1)
def version_skew() -> dict[str, str]:
    """File (relative to the corpus) → the BuildKit change after v0.12.5 that makes the oracle
    disagree with current BuildKit (``VERSION-SKEW.tsv``).  We follow current BuildKit."""
    path = CORPUS / "VERSION-SKEW.tsv"
    if not path.is_file():
        return {}
    out = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            f = row["file"]
            if (CORPUS / f).is_file():
                out[f] = row["buildkit_change"]
    return out


def load_oracle(dockerfile: Path) -> dict:
    return json.loads(dockerfile.with_name(dockerfile.name + ".parse.json").read_text("utf-8"))
