"""``--allow`` parsing: buildx's names, a path grant resolved, anything else refused by name."""

from __future__ import annotations

import os

import pytest

from backend.entitlements import EntitlementError, parse


def test_known_names_and_paths(tmp_path):
    repo = tmp_path / "repos"
    repo.mkdir()
    (tmp_path / "link").symlink_to(repo)
    e = parse(["security.insecure", "network.host", f"fs.read={tmp_path / 'link'}"])
    assert e.insecure and e.network_host and not e.network_private
    assert e.fs_read == (repo,)
    assert e.may_read(repo / "a" / "b") and e.may_read(repo)
    assert not e.may_read(tmp_path) and not e.may_read(tmp_path / "repos-other")


def test_a_link_out_of_a_granted_dir_is_not_granted(tmp_path):
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "escape").symlink_to("/etc")
    assert not parse([f"fs.read={granted}"]).may_read(granted / "escape")


@pytest.mark.parametrize("value", ["security", "network.none", "fs.read", "fs.read=", "network.host=1", "device"])
def test_unknown_values_are_refused_with_the_known_names(value):
    with pytest.raises(EntitlementError, match="known: security.insecure, network.host"):
        parse([value])


def test_nothing_granted_by_default():
    e = parse([])
    assert not (e.insecure or e.network_host or e.network_private or e.fs_read)
    assert not e.may_read(os.getcwd())
