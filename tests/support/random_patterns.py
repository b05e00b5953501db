"""Random ignore/COPY patterns and the fixed paths they are checked against: the property tests of
the matcher (ir) and of .dockerignore (the Dockerfile frontend) draw from the same ones."""

from __future__ import annotations

from hypothesis import strategies as st

ATOMS = st.sampled_from(["a", "b", "*", "**", "?", "[ab]", "x.txt", "*.txt", "dir", ".", ".."])
PATTERN = st.builds(lambda neg, parts: ("!" if neg else "") + "/".join(parts), st.booleans(),
                    st.lists(ATOMS, min_size=1, max_size=3))
PATHS = ["a", "b", "a/b", "a/b/c", "dir/x.txt", "x.txt", "a/x.txt", "dir", "b/a", "ab", "a/a/a", "dir/a/x.txt",
         "dir/dir/b/x.txt", "a/b/c/d"]
