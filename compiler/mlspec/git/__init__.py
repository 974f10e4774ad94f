"""Git, written once: the runner every git command goes through, where a change comes from, commit signatures.

``runner``: :class:`Git` and :class:`GitError`; ``info``: the project's revision and
the acting user; ``signatures``: whether a commit is signed by a trusted key.
"""

from mlspec.git.runner import Git, GitError, GitNotInstalled, GitResult, GitTimeout

__all__ = ["Git", "GitError", "GitNotInstalled", "GitResult", "GitTimeout"]
