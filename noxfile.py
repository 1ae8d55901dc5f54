"""Project checks: ``nox -s tests`` (the test matrix), ``nox -s lint``, ``nox -s typecheck``.

The test matrix is Django 5.2 LTS on Python 3.11, and the newest Django on the newest
Python found on this machine (on PATH, or installed by pyenv).
"""

import glob
import os
import re
import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True


def _find_pythons() -> dict[str, str]:
    """Map "3.X" to an interpreter path, for every CPython >= 3.11 found here."""
    found: dict[str, str] = {}
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*")))
    for minor in range(11, 20):
        path = shutil.which(f"python3.{minor}")
        if path:
            candidates.append(path)
    for path in candidates:
        match = re.search(r"python(3\.\d+)$", path)
        if match and int(match[1].split(".")[1]) >= 11 and os.access(path, os.X_OK):
            found.setdefault(match[1], path)
    return found


PYTHONS = _find_pythons()
NEWEST = max(PYTHONS, key=lambda v: int(v.split(".")[1]), default="3.11")
# nox looks interpreters up on PATH: put pyenv's version directories there.
os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(p) for p in PYTHONS.values()] + [os.environ.get("PATH", "")]
)


def _apt_install(session: nox.Session, package: str, present: bool) -> None:
    """Install a Debian package the tests need, unless ``present``; fail saying what to install."""
    if present:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.error(f"install {package}: apt-get install {package}")
    session.run("apt-get", "update", external=True)
    session.run("apt-get", "install", "-y", package, external=True, env={"DEBIAN_FRONTEND": "noninteractive"})


@nox.session
@nox.parametrize(
    ("python", "django"),
    [("3.11", "django>=5.2,<5.3"), (NEWEST, "django")],
    ids=["py3.11-django5.2", f"py{NEWEST}-django-latest"],
)
def tests(session: nox.Session, django: str) -> None:
    """Run the test suite (pytest + pytest-trio, real sockets on 127.0.0.1)."""
    session.install("-e", ".[test]", django)
    # tests/system/test_browser*.py drive Debian's Chromium (not Playwright's own downloads);
    # tests/system/test_broker.py starts real redis-server processes; test_broker_sentinel.py a
    # Redis Sentinel too, as `redis-server --sentinel` (no redis-sentinel package needed).
    _apt_install(session, "chromium", os.path.exists("/usr/bin/chromium"))
    _apt_install(session, "redis-server", shutil.which("redis-server") is not None)
    session.run(
        "python", "-c", "import django, sys; print('Django', django.get_version(), 'on', sys.version)"
    )
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[redis,testing,metrics]", "mypy", "pytest")  # testing.py: pytest, trustme
    session.run("mypy")
