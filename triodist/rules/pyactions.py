"""Actions written in Python: ``PythonAction("package.module:function", timeoutMs)`` and
its response twin, ``PythonResponseAction``, where the function is ``async def f(dq)``.

The action itself waits for nothing: like ``dq:suspend``, it marks the query as held
(``dq.suspension`` is its ``PythonCall``) and the rule chain stops there. The pipeline
then gives the query its own task, as for any query that waits, and the task's wait is
the function's call (``PythonCall.run``), under a cancel scope whose deadline is the
action's timeout. What the function returns (a ``Verdict``, ``pyverdict.py``) becomes the
verdict of the action that held the query, and the chain goes on exactly as after a held
query's ``resume()`` (``Pipeline.query_resumed``, ``response_resumed``). At the deadline
the query goes on as after an asynchronous timeout (``setAsyncTimeoutPolicy``). An
exception, or a value that is not a verdict, answers that query SERVFAIL (a response: its
rcode only, as a failing response rule), logged once a minute per function and kind of
error. A query that meets no Python action never gets a task for one.

How many wait at once is bounded by the asynchronous registry's bound
(``setMaxSuspended``), shared with the held objects: over it the action lets the query go
on to the next rule without calling the function, as a refused ``suspend`` does.

The function gets a view of the query of its own (``luaview.own_view``): the methods and
fields of Lua's ``dq``, with the same names (``dq.qname``, ``dq.getTag("x")``), valid until
the function returns.

Imports nothing above triodist.rules (asyncproc beside it, the wire format and util).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import math
import sys
import traceback
import weakref
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import trio

from triodist.asyncproc.registry import MAX_TIMEOUT_MS, AsyncRegistry, Ending, answer_with_rcode
from triodist.rules.actionbase import ActionKind, QueryAction, ResponseActionBase
from triodist.rules.luaview import own_view
from triodist.rules.pyverdict import Verdict
from triodist.rules.verdicts import Action, ResponseAction
from triodist.rules.verdicts import Verdict as Pair
from triodist.util.luavalues import describe as lua_describe
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.message import DNSQuestion

log = logging.getLogger("triodist.python")

#: What a Python action's function is: ``async def f(dq) -> Verdict | None``.
PythonFunction = Callable[[Any], Coroutine[Any, Any, Any]]

#: A verdict's kind as each kind of action returns it.
QUERY_VERDICTS: dict[str, int] = {
    "none": Action.None_,
    "allow": Action.Allow,
    "drop": Action.Drop,
    "nxdomain": Action.Nxdomain,
    "refused": Action.Refused,
    "servfail": Action.ServFail,
    "truncate": Action.Truncate,
    "spoof": Action.Spoof,
    "pool": Action.Pool,
    "delay": Action.Delay,
    "rcode": Action.None_,  # the answer is made first; the chain then sends it
}
RESPONSE_VERDICTS: dict[str, int] = {
    "none": ResponseAction.None_,
    "allow": ResponseAction.Allow,
    "drop": ResponseAction.Drop,
    "servfail": ResponseAction.ServFail,
    "truncate": ResponseAction.Truncate,
    "delay": ResponseAction.Delay,
    "rcode": ResponseAction.None_,
}


class Step(Protocol):
    """The stopped chain a call's verdict goes into (``query.outcome.Suspended``)."""

    obj: DNSQuestion
    action: int
    extra: str


class BadVerdict(Exception):
    """A function returned something that is no verdict for its kind of action."""


class PythonActionBase(ActionKind):
    """What both twins share: the function, its deadline, its errors."""

    #: The verdicts of this kind of action, by ``Verdict.kind``, and its name in messages.
    VERDICTS: dict[str, int]
    KIND = "query action"

    def __init__(self, target: str, func: PythonFunction, timeout_ms: Any) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"{type(self).__name__}: '{target}' is not an async def function "
                f"(got {_shown(func)})"
            )
        self.target = target
        self.func = func
        self.timeout = _timeout(timeout_ms, type(self).__name__) / 1000
        #: An exception raised by the function comes at the query rate: a line a minute.
        self.errors = RateLimitedLog(log)

    def __call__(self, obj: DNSQuestion) -> Pair:
        registry = obj.async_registry
        if registry is None:
            raise RuntimeError(f"{type(self).__name__} runs only in a server's rule chain")
        call = PythonCall(self, registry, trio.current_time() + self.timeout)
        if not registry.add_awaiting(call):
            # As a suspend refused over the bound: the query goes on, uncalled.
            registry.stats["python-over-bound"] += 1
            return self.NONE
        obj.suspension = call
        return self.NONE

    def verdict(self, obj: DNSQuestion, result: Any) -> Pair:
        """What ``result`` means for ``obj``: the action's verdict once its call ended."""
        if result is None:
            return self.NONE
        if not isinstance(result, Verdict):
            raise BadVerdict(
                f"returned {_shown(result)}, not None or a Verdict "
                "(from triodist.rules import Verdict)"
            )
        action = self.VERDICTS.get(result.kind)
        if action is None:
            raise BadVerdict(
                f"returned {result!r}, which a {self.KIND} cannot take "
                f"(it takes {', '.join(_names(self.VERDICTS))} or None)"
            )
        if result.kind == "rcode":
            answer_with_rcode(obj, result.code, clear_records=result.clear_records)
        return (action, result.extra)

    def failed(self, obj: DNSQuestion, error: BaseException) -> None:
        """The function raised, or returned no verdict: logged once a minute per kind of
        error, its traceback at DEBUG."""
        if isinstance(error, BadVerdict):
            key, text = "bad verdict", str(error)
        else:
            frames = traceback.extract_tb(error.__traceback__)
            where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
            key = f"{type(error).__name__}{where}"
            text = f"raised {type(error).__name__}: {_first_line(error)}"
        self.errors.warning(
            f"{self.target} {key}",
            f"Python action {self.target} for {obj.describe()} {text}; answered SERVFAIL",
            exc=None if isinstance(error, BadVerdict) else error,
        )

    def describe(self) -> str:
        return f"Python function {self.target} (timeout {self.timeout * 1000:g} ms)"


class PythonAction(PythonActionBase, QueryAction):
    """``PythonAction("package.module:function", timeoutMs)``: ``await function(dq)`` in
    the query's own task; its verdict goes on as a resumed held query's."""

    VERDICTS = QUERY_VERDICTS


class PythonResponseAction(PythonActionBase, ResponseActionBase):
    """The response twin of ``PythonAction``: ``await function(dr)``."""

    VERDICTS = RESPONSE_VERDICTS
    KIND = "response action"


class _Returned:
    """What a function's view points at once the function has returned: every use is an
    error that says why (luaview's own sentinel speaks of a Lua call)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(_RETURNED)

    def __setattr__(self, name: str, value: Any) -> None:
        raise RuntimeError(_RETURNED)

    def __str__(self) -> str:
        return "<dq after its Python action returned>"


_RETURNED = (
    "a dq (or dr) is only valid until the Python action's function that received it "
    "returns; it was kept and used after that"
)
RETURNED: Any = _Returned()


class PythonCall:
    """One call of a Python action's function, for one query or response: waiting in the
    registry from the action's return (``add_awaiting``) until its task ran it.

    Resource handling: the cancel scope is made with its deadline when the action
    returns, so a query that waited for its task is not given more time; ``expire``
    (the registry's, at shutdown) cancels it, so the call ends as at its deadline.
    Whatever ends the call, the registry forgets it and the view is detached."""

    __slots__ = ("action", "keep_verdict", "registry", "scope", "state")

    def __init__(self, action: PythonActionBase, registry: AsyncRegistry, deadline: float) -> None:
        self.action = action
        self.registry = registry
        self.scope = trio.CancelScope(deadline=deadline)
        #: False in a ``ContinueAction``, which goes on with the next rule whatever the
        #: action it runs decides.
        self.keep_verdict = True
        #: How the call stands, in the words of a held object's state where they fit
        #: ("timed-out"), as what reads a suspension's ``state`` shows it (the replay's
        #: report): "waiting", then "returned", "timed-out" or "failed".
        self.state = "waiting"

    def expire(self) -> None:
        self.scope.cancel()

    async def run(self, step: Step) -> Ending:
        """Call the function with a view of ``step.obj`` under the deadline; set the
        step's verdict from what it returned; how the chain goes on (``Ending``)."""
        obj, action, registry = step.obj, self.action, self.registry
        stats = registry.stats
        stats["python-calls"] += 1
        view = own_view(type(obj))
        view.target = obj
        try:
            with self.scope:
                result = await action.func(view)
            # cancel_called, not cancelled_caught: a function that catches Trio's
            # Cancelled (a bare except, an except BaseException) and returns a fallback
            # has still met its deadline, and the timeout policy decides, not the fallback.
            if self.scope.cancel_called:
                self.state = "timed-out"
                stats["python-timeouts"] += 1
                return registry.after_timeout()
            if self.keep_verdict:
                step.action, step.extra = action.verdict(obj, result)
            self.state = "returned"
        except BaseException as exc:  # the function's fault: this query only, never the server
            if _passes_through(exc):
                raise
            if self.scope.cancel_called:  # raised on its way out of the deadline: a timeout
                self.state = "timed-out"
                stats["python-timeouts"] += 1
                return registry.after_timeout()
            self.state = "failed"
            stats["python-errors"] += 1
            action.failed(obj, exc)
            return Ending.SERVFAIL
        finally:
            # Kept by the function (a global, a task of its own), the view now says it
            # is no longer valid rather than show another query.
            view.target = RETURNED
            obj.suspension = None
            registry.awaiting.discard(self)
        return Ending.GO_ON


#: What a function raises that is not its own failure: Trio's cancellation of the query's
#: task (a shutdown's grace period, a TCP client gone), and what stops the process (Ctrl-C,
#: ``sys.exit``). Anything else, ``BaseException`` or not, answers its query SERVFAIL.
_NOT_THE_FUNCTIONS = (trio.Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit)


def _passes_through(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):  # a nursery of the function's own
        return exc.subgroup(lambda e: isinstance(e, _NOT_THE_FUNCTIONS)) is not None
    return isinstance(exc, _NOT_THE_FUNCTIONS)


# --- loading ---------------------------------------------------------------------------------


def import_function(
    target: Any, directories: Sequence[Path], modules: dict[str, ModuleType]
) -> PythonFunction:
    """The function ``target`` ("package.module:function") names, its module imported
    afresh (once per ``modules``, the configuration's) from ``directories`` first, then
    ``sys.path``. ``ValueError`` or ``TypeError`` says what is wrong."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(f"expected 'package.module:function', got {lua_describe(target)}")
    name, _, attribute = target.partition(":")
    if not all(part.isidentifier() for part in [*name.split("."), attribute]):
        raise ValueError(f"expected 'package.module:function', got '{target}'")
    if name.split(".")[0] in (*sys.stdlib_module_names, "triodist"):
        raise ValueError(f"'{name}' is a module of Python or triodist: name yours otherwise")
    module = modules.get(name)
    if module is None:
        existing = sys.modules.get(name)
        if existing is not None and existing not in _IMPORTED_FRESH:
            # Imported by someone else (a library such as trio or dnspython, the server's
            # own, a module a test imported): used as it is. Running it again would put a
            # second copy in sys.modules under the server's feet.
            module = existing
        else:
            module = _import_fresh(name, directories)
        modules[name] = module
    func = getattr(module, attribute, None)
    if func is None:
        raise ValueError(f"module '{name}' ({module.__file__}) has no '{attribute}'")
    return func  # type: ignore[no-any-return]  # the action checks it is an async def


#: The modules ``_import_fresh`` made: the only ones it imports again, for the next
#: configuration that names them (weak: an old configuration's module goes with it).
_IMPORTED_FRESH: weakref.WeakSet[ModuleType] = weakref.WeakSet()


def _import_fresh(name: str, directories: Sequence[Path]) -> ModuleType:
    """Import module ``name`` anew (a reload sees an edited file): it replaces the one in
    ``sys.modules`` (one this function made, or none); the packages above it are imported
    as Python always does (once)."""
    places = [str(d) for d in directories]
    parent_name, _, _ = name.rpartition(".")
    with _searched_first(places):
        if parent_name:
            try:
                parent = importlib.import_module(parent_name)
            except ImportError as exc:
                raise ValueError(f"no package '{parent_name}' ({_where(places)})") from exc
            search = list(getattr(parent, "__path__", []))
        else:
            search = sys.path
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None or spec.loader is None:
            raise ValueError(f"no module named '{name}' ({_where(places)})")
        module = importlib.util.module_from_spec(spec)
        _IMPORTED_FRESH.add(module)
        previous = sys.modules.get(name)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
            raise ValueError(
                f"importing '{name}' failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
    return module


@contextmanager
def _searched_first(places: list[str]) -> Iterator[None]:
    """``places`` first on ``sys.path`` while the module is imported (as Python puts a
    script's directory first), so that it finds its neighbours too; then as it was."""
    sys.path[:0] = places
    try:
        yield
    finally:
        for place in places:
            # The first occurrence: the one put in front (the module may have changed
            # the rest, and that is its own business).
            if place in sys.path:
                sys.path.remove(place)


def _where(places: list[str]) -> str:
    return f"looked in {', '.join(places)} and on sys.path" if places else "looked on sys.path"


def _timeout(value: Any, function: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_TIMEOUT_MS
    ):
        raise ValueError(
            f"{function}: expected a timeout in ms above 0 and at most {MAX_TIMEOUT_MS}, "
            f"got {lua_describe(value)}"
        )
    return float(value)


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _names(verdicts: dict[str, int]) -> list[str]:
    calls = {"spoof": "spoof()", "pool": "pool()", "delay": "delay()", "rcode": "rcode()"}
    return [calls.get(kind, kind.upper()) for kind in verdicts if kind != "none"]
