"""One declaration, two ways to serve it: a FastAPI route that is also answered by a plain ASGI handler.

A route is declared once, as any FastAPI route (method, path, request and response models, the
dependencies `include_router` adds: the API key), and marked with `@fast_path(handler, performs=...)`.
Its FastAPI endpoint is the documented, complete (slower) path. RequestMiddleware (app/middleware.py)
answers the same method and path with `handler`, past FastAPI's middleware, router, dependency
resolution and response model (bench/results/profile.md: FastAPI's path costs several times the
handler's); `fast_routes` derives that dispatch table from the app's routes, so a router prefix moves
both paths together. The handler validates with the route's own body field and raises the exceptions
the route would raise, answered by the app's own exception handlers (`answer_error`): one set of status
codes, messages and check order.

A dependency the handler does not perform itself would run only on the FastAPI path: `fast_routes`
refuses it (FastPathError, at start-up) rather than let the two paths differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.routing import iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

FAST_PATH_ATTR = "__fast_path__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class FastRoute:
    """One (method, path) the middleware hands to `handler`, as the app's routes declare it."""

    method: str
    path: str  # the full path, router prefixes included; also the route's metrics label
    endpoint: Callable[..., Any]  # the FastAPI endpoint it was declared on
    handler: FastHandler
    dependencies: tuple[Callable[..., Any], ...]  # the route's dependencies, in the order FastAPI runs them
    body_field: Any  # FastAPI's ModelField of the request body: the handler validates with it

    def depends_on(self, call: Callable[..., Any]) -> bool:
        return call in self.dependencies


FastHandler = Callable[[FastRoute, Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Marker:
    handler: FastHandler
    performs: frozenset[Callable[..., Any]]


class FastPathError(RuntimeError):
    """A route marked with @fast_path that its handler cannot serve as FastAPI would."""


def fast_path(
    handler: FastHandler, *, performs: Collection[Callable[..., Any]]
) -> Callable[[Endpoint], Endpoint]:
    """Mark a FastAPI endpoint as also served by `handler`. `performs`: the dependencies (their
    callables) that `handler` does itself, in FastAPI's order; a route with any other is refused."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, FAST_PATH_ATTR, _Marker(handler, frozenset(performs)))
        return endpoint

    return mark


def is_fast_path_endpoint(endpoint: object) -> bool:
    return hasattr(endpoint, FAST_PATH_ATTR)


def fast_routes(routes: list[BaseRoute]) -> dict[tuple[str, str], FastRoute]:
    """The dispatch table of every @fast_path route among `routes` (included routers and their
    prefixes resolved, as FastAPI serves them). FastPathError for a route whose handler cannot do
    what FastAPI would: a dependency it does not perform, or a path with parameters."""
    table: dict[tuple[str, str], FastRoute] = {}
    for route in iter_route_contexts(routes):
        marker = getattr(route.endpoint, FAST_PATH_ATTR, None)
        if not isinstance(marker, _Marker):
            continue
        path, methods = route.path, sorted(route.methods or ())
        where = f"{'/'.join(methods)} {path}"
        if "{" in path:
            raise FastPathError(f"{where}: a fast path serves static paths only, not path parameters")
        calls = tuple(d.call for d in route.dependant.dependencies if d.call is not None)
        foreign = [c for c in calls if c not in marker.performs]
        if foreign:
            names = ", ".join(getattr(c, "__qualname__", repr(c)) for c in foreign)
            raise FastPathError(
                f"{where}: dependency {names} would run on the FastAPI route only, not on its fast path "
                f"({marker.handler.__module__}.{marker.handler.__qualname__}); do what it does in that "
                "handler and list it in @fast_path(performs=...), or put it in a middleware, which runs "
                "for both"
            )
        for method in methods:
            table[(method, path)] = FastRoute(
                method, path, route.endpoint, marker.handler, calls, route.body_field
            )
    return table


async def answer_error(route: FastRoute, scope: Scope, exc: Exception) -> Response:
    """The response the app's own exception handlers (app/errors.py) give `exc`, as FastAPI would
    answer it on the route: a fast path raises what its route raises and answers with this."""
    scope["endpoint"] = route.endpoint  # as FastAPI's routing sets it (app/errors.py reads it)
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return await handler(Request(scope), exc)
    raise exc
