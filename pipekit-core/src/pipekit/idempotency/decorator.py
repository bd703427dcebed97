"""``@pipekit.idempotent``: make a function (plain or ``async``) safe to retry."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from ..errors import IdempotencyClaimLost, IdempotencyError, IdempotencyInProgress
from . import codec, keys
from .manager import (
    DEFAULT_FAILED_TTL,
    DEFAULT_PENDING_TIMEOUT,
    DEFAULT_TTL,
    Backoff,
    IdempotencyManager,
    is_retryable,
    validate_times,
)
from .status import IdempotencyStatus

__all__ = ["idempotent", "DEFAULT_RETRYABLE"]

log = logging.getLogger("pipekit.idempotency")

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RETRYABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    IdempotencyInProgress,
)
"""Failures that are not replayed: the next call runs again."""

_MISSING: Any = object()


class _Spec:
    """Everything a decorated function's calls share."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        operation: str | None,
        key: Any,
        context: Any,
        ignore: Sequence[str],
        result_type: Any,
        manager_args: dict[str, Any],
        retryable: Any,
    ) -> None:
        self.func = func
        self.signature = inspect.signature(func)
        params = self.signature.parameters
        self.operation = operation or f"{func.__module__}.{func.__qualname__}"
        keys.check_operation(self.operation)
        self.ignore = frozenset((ignore,) if isinstance(ignore, str) else ignore)
        if key is None or callable(key):
            self.key_fn, self.key_names = key, None
        elif isinstance(key, str):
            self.key_fn, self.key_names = None, [key]
        elif isinstance(key, (list, tuple)) and key and all(isinstance(n, str) for n in key):
            self.key_fn, self.key_names = None, list(key)
        else:
            raise TypeError(
                "key= must be a function returning the key, or the name(s) of the arguments "
                f"that make the key; got {key!r}"
            )
        for name in [*self.ignore, *(self.key_names or [])]:
            if name not in params:
                raise TypeError(
                    f"{func.__qualname__} has no argument {name!r} "
                    f"(its arguments: {', '.join(params) or 'none'})"
                )
        if context is not None and not callable(context) and not isinstance(context, dict):
            raise TypeError("context= must be a dict or a function returning one")
        self.context = context
        self.result_type = result_type
        self._result_type_checked = False
        self.manager_args = manager_args
        self.retryable = retryable

    @functools.cached_property
    def manager(self) -> IdempotencyManager:
        """Made at the first call (the default store is the current folder's then)."""
        return IdempotencyManager(**self.manager_args)

    def checked_result_type(self) -> Any:
        """The return type, checked to be storable (before the first run)."""
        if not self._result_type_checked:
            tp = self.result_type
            if tp is _MISSING:
                tp = codec.resolve_return_type(self.func)
            codec.check_type(tp)
            self.result_type = tp
            self._result_type_checked = True
        return self.result_type

    def key_and_fingerprint(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        inputs = {k: v for k, v in bound.arguments.items() if k not in self.ignore}
        ctx = self.context() if callable(self.context) else self.context
        doc = inputs if ctx is None else {"inputs": inputs, "context": ctx}
        where = f"the arguments of {self.func.__qualname__}"
        fingerprint = keys.digest(doc, where=where)
        if self.key_fn is not None:
            key = self.key_fn(*args, **kwargs)
            if not isinstance(key, str) or not key:
                raise TypeError(
                    f"the key= function of {self.func.__qualname__} must return a non-empty "
                    f"str, not {key!r}"
                )
        elif self.key_names is not None:
            picked = {n: bound.arguments[n] for n in self.key_names}
            key = keys.make_key(self.operation, picked, context=ctx)
        else:
            key = f"{self.operation}:{fingerprint}"
        return key, fingerprint

    def replay(self, status: IdempotencyStatus, tp: Any) -> Any:
        try:
            return codec.load(status.result, tp)
        except Exception as exc:
            raise IdempotencyError(
                f"the stored result of idempotency key {status.key!r} does not read back as "
                f"{codec.type_name(tp)} ({exc}); did the function's return type change? Forget "
                f"the key (pipekit idem forget {status.key!r}) or change the operation name",
                key=status.key,
            ) from None


def _call_sync(spec: _Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    key, fingerprint = spec.key_and_fingerprint(args, kwargs)
    tp = spec.checked_result_type()
    manager = spec.manager
    status = manager.begin(key, fingerprint)
    if status.hit:
        return spec.replay(status, tp)
    try:
        value = spec.func(*args, **kwargs)
    except BaseException as exc:
        _record_failure(spec, manager, status, exc)
        raise
    _record_success(spec, manager, status, value, tp)
    return value


def _record_failure(
    spec: _Spec, manager: IdempotencyManager, status: IdempotencyStatus, exc: BaseException
) -> None:
    try:
        if isinstance(exc, Exception):
            manager.fail(status, exc, retryable=is_retryable(exc, spec.retryable))
        else:
            manager.release(status, f"{type(exc).__name__}: the call did not finish")
    except IdempotencyClaimLost as lost:
        log.warning("%s", lost)
    except Exception as store_error:  # the original failure matters more
        log.warning("could not record the failure of %s: %s", status.key, store_error)


def _record_success(
    spec: _Spec, manager: IdempotencyManager, status: IdempotencyStatus, value: Any, tp: Any
) -> None:
    try:
        manager.complete(status, value, result_type=tp)
    except IdempotencyClaimLost as lost:
        log.warning("%s", lost)
    except TypeError as exc:
        # The body ran but its result cannot be stored: replay this error
        # rather than run the body (and its side effects) again.
        manager.fail(status, exc, retryable=False)
        raise


async def _call_async(spec: _Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    key, fingerprint = spec.key_and_fingerprint(args, kwargs)
    tp = spec.checked_result_type()
    manager = spec.manager
    backoff = Backoff(manager.wait)
    while True:
        try:
            status = await asyncio.to_thread(manager.try_begin, key, fingerprint)
            break
        except IdempotencyInProgress as busy:
            await asyncio.sleep(backoff.pause(busy))
    if status.hit:
        return spec.replay(status, tp)
    try:
        value = await spec.func(*args, **kwargs)
    except BaseException as exc:
        # shielded from a second cancellation: the claim must not stay PENDING
        await asyncio.shield(asyncio.to_thread(_record_failure, spec, manager, status, exc))
        raise
    await asyncio.to_thread(_record_success, spec, manager, status, value, tp)
    return value


@overload
def idempotent(func: F) -> F: ...


@overload
def idempotent(
    func: None = None,
    *,
    ttl: float | None = ...,
    key: Any = ...,
    store: Any = ...,
    failed_ttl: float = ...,
    pending_timeout: float = ...,
    wait: float | None = ...,
    operation: str | None = ...,
    context: Any = ...,
    ignore: Sequence[str] = ...,
    retryable: Any = ...,
    result_type: Any = ...,
) -> Callable[[F], F]: ...


def idempotent(
    func: Callable[..., Any] | None = None,
    *,
    ttl: float | None = DEFAULT_TTL,
    key: Any = None,
    store: Any = None,
    failed_ttl: float = DEFAULT_FAILED_TTL,
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
    wait: float | None = None,
    operation: str | None = None,
    context: Any = None,
    ignore: Sequence[str] = (),
    retryable: Any = DEFAULT_RETRYABLE,
    result_type: Any = _MISSING,
) -> Any:
    """Make ``func`` idempotent: one run per key, its result (or failure)
    stored and returned to every later call with the same key
    (docs/idempotency.md, "The decorator", says each option in full).

    - ``key``: None derives ``operation:hash`` from all the arguments;
      argument name(s) key on those only (a call whose other arguments
      differ is :class:`~pipekit.errors.IdempotencyConflict`); a function of
      the same signature returns the key as a str.
    - ``context``: a dict, or a function returning one, made part of the key.
    - ``ignore``: argument names left out of key and fingerprint.
    - ``store``: a store object, a folder path, or None (the default folder).
    - ``ttl``, ``failed_ttl``, ``pending_timeout``, ``wait``: seconds (see
      :class:`IdempotencyManager`).
    - ``retryable``: exception types (or a predicate) whose failures are not
      replayed; default :data:`DEFAULT_RETRYABLE`.
    - ``result_type``: the type results are stored and restored as (default:
      the return annotation, then required), checked before the first run.
      ``Any`` stores plain JSON values as they are.
    """

    def decorate(f: Callable[..., Any]) -> Any:
        spec = _Spec(
            f,
            operation=operation,
            key=key,
            context=context,
            ignore=ignore,
            result_type=result_type,
            manager_args={
                "store": store,
                "ttl": ttl,
                "failed_ttl": failed_ttl,
                "pending_timeout": pending_timeout,
                "wait": wait,
            },
            retryable=retryable,
        )
        validate_times(ttl, failed_ttl, pending_timeout, wait)
        try:
            spec.checked_result_type()  # fail at decoration when it can be known now
        except codec.UnresolvedAnnotation:
            pass  # a forward reference to a later definition: checked at the first call

        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await _call_async(spec, args, kwargs)

            async_wrapper.idempotency = spec  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return _call_sync(spec, args, kwargs)

        wrapper.idempotency = spec  # type: ignore[attr-defined]
        return wrapper

    if func is not None:
        if not callable(func):
            raise TypeError("@pipekit.idempotent decorates a function; pass options by keyword")
        return decorate(func)
    return decorate
