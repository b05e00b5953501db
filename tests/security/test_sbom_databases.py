"""A package database is written by the image's own steps, then parsed by irctl on the host for
``--sbom`` (``backend.export.pkgdb``): its size is bounded (32 MiB), so its parsing must be linear in it."""

from __future__ import annotations

import time

from backend.export import pkgdb


def test_a_status_field_of_blanks_between_words_parses_in_linear_time():
    """``Version: 1`` followed by a million blanks and one more letter: a lazy value before optional
    trailing blanks retried the blanks at every position (quadratic: 40,000 blanks took 6 s, the
    32 MiB a status file may hold would take weeks)."""
    text = "Package: a\nStatus: install ok installed\nVersion: 1" + " " * (1 << 20) + "x\n"
    started = time.monotonic()
    packages, bad = pkgdb.dpkg_packages(text, "/var/lib/dpkg/status")
    assert time.monotonic() - started < 2
    assert (packages, bad) == ([], 1)  # a version with blanks in it is no version


def test_trailing_blanks_of_a_field_are_still_not_its_value():
    (pkg,), bad = pkgdb.dpkg_packages("Package: a \t\nStatus: install ok installed  \nVersion: 1.0 \n", "s")
    assert (pkg.name, pkg.version, bad) == ("a", "1.0", 0)


def test_a_copyright_license_line_of_blanks_parses_in_linear_time():
    """``License: GPL`` then a million blanks: ``\\s+or\\s+`` tried at every blank rescanned the run
    (quadratic: 40,000 blanks took 5 s; a copyright file may hold 4 MiB, and there is one per package)."""
    started = time.monotonic()
    assert pkgdb.copyright_licenses("License: GPL" + " " * (1 << 20) + "x\n") == ""  # two words are no licence
    assert time.monotonic() - started < 2
    assert pkgdb.copyright_licenses("License: GPL-2+ or  Artistic,MIT\tand BSD-3-clause\nLicense: MIT\n") == \
        "Artistic AND BSD-3-clause AND GPL-2+ AND MIT"
