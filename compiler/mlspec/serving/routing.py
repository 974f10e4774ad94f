"""Routing: one table from (path, method) to handler.

A request target that matches a path exactly goes straight to its handler (the hot path: one dict lookup per
level). Anything else is normalised (query string and trailing slash dropped) and looked up again; a path
that is not in the table is a miss with status 404, a known path asked with a method it does not take a miss
with status 405 and the methods it does take (the ``Allow`` header).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlspec.serving.http import Connection, Headers

Handler = Callable[["Connection", bytes, "Headers"], "bytes | None"]
"""Answers one request: (connection, body, headers) -> a whole response, or None when it answers later."""


@dataclass(frozen=True, slots=True)
class RouteMiss:
    """A request no route takes: 404 (unknown path) or 405 (known path, other method; ``allow`` lists them)."""

    status: int
    method: str
    path: str
    allow: tuple[str, ...] = ()


def normalise(url: bytes) -> str:
    """The path of a request target: no query string, no trailing slash (``/`` stays)."""
    return url.split(b"?", 1)[0].decode("utf-8", "replace").rstrip("/") or "/"


class RouteTable:
    """The server's routes: path -> method -> handler; misses go to ``on_miss``."""

    __slots__ = ("_routes", "on_miss")

    def __init__(self, on_miss: Callable[[RouteMiss, Headers], bytes]) -> None:
        """An empty table whose misses are answered by ``on_miss``."""
        self._routes: dict[bytes, dict[bytes, Handler]] = {}
        self.on_miss = on_miss

    def add(self, path: str, method: str, handler: Handler) -> None:
        """Route ``method`` on ``path`` to ``handler`` (the first route added for a path and method wins)."""
        self._routes.setdefault(path.encode(), {}).setdefault(method.encode(), handler)

    def paths(self) -> list[str]:
        """Every routed path, in the order added."""
        return [path.decode() for path in self._routes]

    def allowed(self, path: str) -> tuple[str, ...]:
        """The methods ``path`` takes (sorted; empty when it is not routed)."""
        return tuple(sorted(method.decode() for method in self._routes.get(path.encode(), {})))

    def dispatch(self, conn: Connection, method: bytes, url: bytes, body: bytes, headers: Headers) -> bytes | None:
        """Answer one request with its route's handler, or with ``on_miss``."""
        methods = self._routes.get(url)
        if methods is not None:
            handler = methods.get(method)
            if handler is not None:
                return handler(conn, body, headers)
        path = normalise(url)
        methods = self._routes.get(path.encode())
        name = method.decode("ascii", "replace")
        if methods is None:
            return self.on_miss(RouteMiss(404, name, path), headers)
        handler = methods.get(method)
        if handler is None:
            return self.on_miss(RouteMiss(405, name, path, self.allowed(path)), headers)
        return handler(conn, body, headers)
