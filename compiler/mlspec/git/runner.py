"""The one way mlspec runs git: ``git -C <folder> ...`` with a timeout, a fixed locale and no prompts.

Every git command mlspec runs goes through :class:`Git`. A command that cannot run
(git missing, a timeout) or, for the checking methods, exits non-zero raises
:class:`GitError`, which carries the command, the exit code and git's stderr as
data; its message names the subcommand and git's own complaint in one line.

Example::

    from mlspec.git import Git, GitError

    repo = Git(Path("."))
    head = repo.rev_parse("HEAD")
    try:
        repo.output("merge-base", "--is-ancestor", "a", "b")
    except GitError as exc:
        print(exc.returncode, exc.stderr)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from mlspec.errors import MlspecError

DEFAULT_TIMEOUT = 120.0
# Messages in English (parsed by nobody, but shown to users and matched in logs); never ask for credentials.
_BASE_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}

Out = TypeVar("Out", str, bytes)


class GitError(MlspecError):
    """A git command failed, could not start, or ran out of time.

    ``command`` is the full argument list, ``returncode`` git's exit status (None when
    git did not finish: not installed, or timed out), ``stderr`` what git wrote there.
    (``exit_code``, inherited, stays the exit code of the mlspec command that fails.)
    """

    def __init__(
        self, command: Sequence[str], returncode: int | None, stderr: str, *, reason: str = "", hint: str = ""
    ) -> None:
        self.command = tuple(command)
        self.returncode = returncode
        self.stderr = stderr
        self.subcommand = subcommand(self.command)
        detail = reason or _complaint(stderr) or f"exit {returncode}"
        super().__init__(f"git {self.subcommand} failed: {detail}", hint=hint)


class GitTimeout(GitError):
    """A git command ran longer than its timeout and was stopped."""

    def __init__(self, command: Sequence[str], timeout: float, stderr: str = "") -> None:
        self.timeout = timeout
        super().__init__(command, None, stderr, reason=f"no answer after {timeout:g} s (stopped)")


class GitNotInstalled(GitError):
    """The ``git`` executable is not on PATH."""

    def __init__(self, command: Sequence[str]) -> None:
        super().__init__(
            command, None, "", reason="git is not installed", hint="install git and make sure it is on PATH"
        )


@dataclass(frozen=True)
class GitResult(Generic[Out]):
    """A finished git command: its exit code and both outputs (stdout as text or bytes, never stripped)."""

    command: tuple[str, ...]
    returncode: int
    stdout: Out
    stderr: str

    @property
    def ok(self) -> bool:
        """True when git exited 0."""
        return self.returncode == 0

    def check(self) -> GitResult[Out]:
        """This result, or :class:`GitError` when git exited non-zero."""
        if self.returncode != 0:
            raise GitError(self.command, self.returncode, self.stderr)
        return self


class Git:
    """Runs git in ``folder`` (``git -C folder``; None: the current folder) with extra ``env`` and a timeout.

    ``run``/``run_bytes`` return a :class:`GitResult` whatever the exit code; ``output``,
    ``output_bytes``, ``toplevel``, ``rev_parse`` and ``archive`` raise :class:`GitError`
    when git exits non-zero; ``succeeds`` answers with the exit code alone. All of them
    raise :class:`GitError` when git cannot run or times out.
    """

    def __init__(
        self, folder: Path | str | None = None, *, env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:  # fmt: skip
        self.folder = Path(folder) if folder is not None else None
        self.env = dict(env or {})
        self.timeout = timeout

    def command(self, args: Sequence[str]) -> list[str]:
        """The argument list that runs ``git args`` in this folder."""
        return ["git", *(["-C", str(self.folder)] if self.folder is not None else []), *args]

    def run(
        self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> GitResult[str]:  # fmt: skip
        """Run git; stdout as UTF-8 text. Does not raise for a non-zero exit (see ``GitResult.check``)."""
        data = stdin.encode() if stdin is not None else None
        done = self._run(args, data, env, timeout)
        return GitResult(done.command, done.returncode, done.stdout.decode(errors="replace"), done.stderr)

    def run_bytes(
        self, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> GitResult[bytes]:  # fmt: skip
        """Run git; stdout as bytes (file contents, archives). Does not raise for a non-zero exit."""
        return self._run(args, stdin, env, timeout)

    def output(
        self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:  # fmt: skip
        """Git's stdout, surrounding whitespace stripped; :class:`GitError` when git exits non-zero."""
        return self.run(*args, stdin=stdin, env=env, timeout=timeout).check().stdout.strip()

    def output_bytes(
        self, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:  # fmt: skip
        """Git's stdout as bytes, untouched; :class:`GitError` when git exits non-zero."""
        return self.run_bytes(*args, stdin=stdin, env=env, timeout=timeout).check().stdout

    def succeeds(self, *args: str, env: Mapping[str, str] | None = None, timeout: float | None = None) -> bool:
        """Whether git exits 0 (for questions such as ``merge-base --is-ancestor``)."""
        return self.run_bytes(*args, env=env, timeout=timeout).ok

    def toplevel(self) -> Path:
        """The root of the work tree the folder is in (``rev-parse --show-toplevel``), resolved."""
        return Path(self.output("rev-parse", "--show-toplevel")).resolve()

    def rev_parse(self, revision: str) -> str:
        """The full commit id ``revision`` (a branch, tag, commit or expression such as ``HEAD~1``) names."""
        found = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
        if not found.ok:
            raise GitError(
                found.command, found.returncode, found.stderr, reason=f"'{revision}' names no commit here",
                hint="give a commit, tag or branch (fetch it first in a shallow clone)",
            )  # fmt: skip
        return found.stdout.strip()

    def archive(self, revision: str) -> bytes:
        """The tree of ``revision`` as an uncompressed tar (``git archive --format=tar``)."""
        return self.output_bytes("archive", "--format=tar", revision)

    def _run(
        self, args: Sequence[str], stdin: bytes | None, env: Mapping[str, str] | None, timeout: float | None
    ) -> GitResult[bytes]:
        command = self.command(args)
        limit = self.timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                command, input=stdin, capture_output=True, check=False, timeout=limit,
                env={**os.environ, **_BASE_ENV, **self.env, **(env or {})},
                stdin=subprocess.DEVNULL if stdin is None else None,
            )  # fmt: skip
        except FileNotFoundError:
            raise GitNotInstalled(command) from None
        except subprocess.TimeoutExpired as exc:
            raise GitTimeout(command, limit, _text(exc.stderr)) from None
        return GitResult(tuple(command), done.returncode, done.stdout, _text(done.stderr))


def subcommand(command: Sequence[str]) -> str:
    """The git subcommand in an argument list (``fetch`` in ``git -C x -c a=b fetch origin``)."""
    args = list(command[1:] if command and command[0] == "git" else command)
    while args:
        word = args.pop(0)
        if word in ("-C", "-c", "--git-dir", "--work-tree", "--namespace"):
            if args:
                args.pop(0)
        elif not word.startswith("-"):
            return word
    return "(no subcommand)"


def _complaint(stderr: str) -> str:
    """Git's complaint in one line: its ``fatal:``/``error:`` lines, else the last line it wrote."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return "; ".join(errors) if errors else (lines[-1] if lines else "")


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
