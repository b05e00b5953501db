"""One exception hierarchy for backend/: every class it defines descends from ``BackendError``, and
the CLI reports each as one line, never a traceback."""

from __future__ import annotations

import errno
import importlib
import inspect
import pkgutil

import pytest

import backend
from backend.errors import BackendError
from backend.fs import safefs
from irctl.errors import UserError, user_errors


def _backend_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(backend.__path__, "backend."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_the_walk_finds_the_rooms_exceptions() -> None:
    names = {f"{c.__module__}.{c.__name__}" for c in _backend_exceptions()}
    assert {"backend.errors.BackendError", "backend.runtime.finder.RuntimeNotFound",
            "backend.oci.reference.RegistryError", "backend.fs.safefs.TreeError"} <= names


def test_every_backend_exception_descends_from_backend_error() -> None:
    stray = [f"{c.__module__}.{c.__name__}" for c in _backend_exceptions() if not issubclass(c, BackendError)]
    assert not stray, "not under backend.errors.BackendError: " + ", ".join(stray)


def test_tree_error_stays_an_os_error() -> None:
    """The walks turn any OSError into a located message; a TreeError must reach them the same way."""
    e = safefs.too_deep("a/b")
    assert isinstance(e, OSError) and isinstance(e, BackendError) and e.errno == errno.ELOOP


@pytest.mark.parametrize("error, message", [
    (safefs.too_deep("a/b"), "directory tree nests deeper than 4096 levels at 'a/b'"),
    (safefs.TreeError(errno.EXDEV, "path climbs out of its root", "x"), "x: path climbs out of its root"),
])
def test_the_cli_reports_a_tree_error_as_one_line(error: BaseException, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(") + "$"):
        with user_errors():
            raise error
