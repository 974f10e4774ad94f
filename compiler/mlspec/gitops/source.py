"""Where the reconciler's commits come from: a clone of the branch, fetched, checked out and verified."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import MlspecError, UsageError
from mlspec.git.runner import Git, GitError
from mlspec.gitops.events import Refusal

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.spec.environment import EnvironmentSpec

FETCH_TIMEOUT = 300.0  # clones and fetches of a large repository over a slow link


class CommitSource:
    """The clone of ``branch`` of ``repo`` at ``clone``, and the project and environment at each commit.

    Graphs are cached per commit (a commit's files never change); ``remember`` puts one
    in the cache, None for a commit where the environment does not resolve.
    """

    def __init__(
        self, repo: str, branch: str, clone: Path, environment: str, *, gnupg_home: Path | None = None
    ) -> None:
        self.repo = normalise_url(repo)
        self.branch = branch
        self.clone = clone
        self.environment = environment
        self.gnupg_home = gnupg_home
        self._git = Git(clone, timeout=FETCH_TIMEOUT)
        self._graphs: dict[str, ResolvedGraph | None] = {}

    def fetch(self) -> str:
        """Clone on first use, then fetch the branch; the branch tip's commit. GitError when git fails."""
        if not (self.clone / ".git").exists():
            self.clone.parent.mkdir(parents=True, exist_ok=True)
            Git(timeout=FETCH_TIMEOUT).output(
                "clone", "--quiet", "--single-branch", "--branch", self.branch, self.repo, str(self.clone)
            )
        else:
            origin = self._git.output("remote", "get-url", "origin")
            if normalise_url(origin) != self.repo:
                raise UsageError(
                    f"{self.clone} is a clone of {origin}, not {self.repo}",
                    hint="use another --workdir for another repository",
                )
        remote = f"refs/remotes/origin/{self.branch}"
        self._git.output("fetch", "--quiet", "--prune", "origin", f"+refs/heads/{self.branch}:{remote}")
        return self._git.output("rev-parse", "--verify", f"{remote}^{{commit}}")

    def checkout(self, commit: str) -> None:
        """Put the clone's files at ``commit``; mlspec's own untracked files (state, outputs) stay."""
        with contextlib.suppress(GitError):
            if self._git.output("rev-parse", "HEAD") == commit:
                return
        self._git.output("checkout", "--quiet", "--force", "--detach", commit)

    def project(self) -> Project:
        """The project as checked out in the clone (never one found above it)."""
        from mlspec.app.project import Project
        from mlspec.load.discovery import PROJECT_FILE

        if not (self.clone / PROJECT_FILE).is_file():
            raise MlspecError(f"no {PROJECT_FILE} at the root of {self.repo} at this commit")
        return Project.open(self.clone)

    def remember(self, commit: str, graph: ResolvedGraph | None) -> None:
        """Cache the environment as resolved at ``commit`` (None: it does not resolve there)."""
        self._graphs[commit] = graph

    def graph(self, commit: str | None) -> ResolvedGraph | None:
        """The environment resolved at ``commit`` (cached per commit), or None when it does not resolve."""
        if commit is None:
            return None
        if commit not in self._graphs:
            try:
                self.checkout(commit)
                self._graphs[commit] = self.project().resolve(self.environment).graph
            except MlspecError:
                return None
        return self._graphs[commit]

    def env_spec(self, commit: str | None) -> EnvironmentSpec | None:
        """The environment's spec at ``commit``, or None when it does not resolve there."""
        graph = self.graph(commit)
        return graph.env.spec if graph is not None else None

    def verify(self, tip: str, anchor: EnvironmentSpec | None, spec: EnvironmentSpec | None) -> None:
        """Refuse an unsigned or untrusted commit where the last applied (or this) commit requires signatures.

        The keys come from the last applied commit when it requires signatures, so a commit
        cannot trust itself in; the commit that turns signing on must be signed by a key it names.
        """
        from mlspec.git.signatures import verify_commit

        settings = anchor.reconcile if anchor is not None and anchor.reconcile.require_signed_commits else None
        if settings is None and spec is not None and spec.reconcile.require_signed_commits:
            settings = spec.reconcile
        if settings is None:
            return
        check = verify_commit(self.clone, tip, settings.trusted_keys, gnupg_home=self.gnupg_home)
        if not check.ok:
            reason = f"{check.message}; '{self.environment}' applies only commits signed by a trusted key"
            raise Refusal(reason, {"signature": check.verdict, "signed_by": check.fingerprint})


def normalise_url(url: str) -> str:
    """A local path made absolute (so it means the same from any folder); URLs as given."""
    if "://" in url or (":" in url.split("/", 1)[0] and not Path(url).exists()):
        return url
    return str(Path(url).expanduser().resolve())
