"""Git plumbing for the registry: running git, finding the repository, the tagger, the lock.

The registry lives in git tags, so every operation needs the repository root and an identity
to record as the tagger, and writers need an exclusive lock (readers a shared one) so that a
promotion's read-decide-write is never interleaved with another's.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from steps.registry.settings import RegistryError


def run_git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RegistryError(f"git {' '.join(args)} in {root}: {done.stderr.strip()}")
    return done.stdout.strip()


def repo_root(repo: Path | str) -> Path:
    try:
        return Path(run_git(Path(repo), "rev-parse", "--show-toplevel"))
    except (RegistryError, FileNotFoundError) as exc:
        raise RegistryError(f"{repo}: the registry lives in git tags: run inside a git repository (git init; git commit)") from exc


def identity(root: Path, who: str | None = None) -> tuple[str, str]:
    """(name, email) recorded as the tagger: ``who`` if given, else git's identity, else $USER."""
    try:
        m = re.match(r"(.*) <(.*)> \d+ [+-]\d{4}$", run_git(root, "var", "GIT_COMMITTER_IDENT"))
    except RegistryError:
        m = None
    user = os.environ.get("USER") or getpass.getuser() or "unknown"
    name, email = (m.group(1), m.group(2)) if m else (user, f"{user}@localhost")
    return (who or name), email


@contextmanager
def registry_lock(root: Path, timeout_s: float, shared: bool = False) -> Iterator[None]:
    """flock on .git/tunegate-registry.lock: exclusive for writers, shared for readers.

    flock (not lockf) so that threads of one process exclude each other too: every call opens
    the file anew, and Linux ties flock to the open file description.
    """
    path = Path(root) / run_git(root, "rev-parse", "--git-common-dir") / "tunegate-registry.lock"
    try:
        fh = open(path, "a+")  # noqa: SIM115  (closed below)
    except OSError as exc:
        if not shared:
            raise RegistryError(f"{path}: cannot open the registry lock ({exc.strerror}); the registry needs a writable .git") from exc
        yield  # a read-only checkout (a serving container): nobody writes here, read without the lock
        return
    with fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(f"{path}: held by another registry operation for over {timeout_s:.0f} s; "
                                        "wait for it or raise registry.lock_timeout_s") from None  # fmt: skip
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
