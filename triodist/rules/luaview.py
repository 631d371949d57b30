"""What a Lua function receives as ``dq`` (or ``dr``): a long-lived view of the query.

lupa hands a Python object to Lua as a userdata that it creates the first time it sees
the object, keeps in a table until Lua's garbage collector finalises the userdata, and
drops then (the finaliser takes the GIL and removes the object from lupa's table).  A
new ``DNSQuestion`` per query therefore costs a new userdata, a finaliser run and a
query kept alive, with everything it holds, until Lua collects: thousands of queries at
a time, which Python's own collector then walks through its generations.  That is most
of what a Lua rule cost per query beyond the call itself (``bench/lua-cost.md``).

So Lua is given one object per class instead, a ``LuaView``, pointed at the query for
the time of the call and pointed away afterwards.  lupa finds its userdata already
made, nothing is left to finalise, and no query outlives its own processing.

A view reads, writes and calls what the object it stands for has, with the same results
and the same errors (its class even has the same name, so an error message reads as
before).  Its methods are bound once, when the view is made, so that ``dq:getTag(...)``
hands Lua the same method object every time (and lupa its userdata).

As in dnsdist, a ``dq`` is only valid during the call that received it.  One kept in a
Lua global and used outside any call raises an error that says so; used during a later
call, it shows that call's query, since every call receives the same view (dnsdist's
would point at freed memory).

Imports nothing of triodist.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any


class _Detached:
    """What a view points at between calls: every use is an error that says why."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(_DETACHED)

    def __setattr__(self, name: str, value: Any) -> None:
        raise RuntimeError(_DETACHED)

    def __str__(self) -> str:
        return "<dq outside of its call>"


_DETACHED = (
    "a dq (or dr) is only valid during the Lua call that received it; "
    "it was kept and used after that call"
)
DETACHED: Any = _Detached()


class LuaView:
    """Base class of the views; one subclass per class of object viewed.

    ``target`` is what the view shows: the callers set it directly (a slot store is
    the cheapest way), and ``DETACHED`` between calls."""

    __slots__ = ("target",)
    target: Any

    def __str__(self) -> str:
        return str(self.target)

    def __repr__(self) -> str:
        return repr(self.target)


#: The view of each class of object, by that class (see ``view_of``).
VIEWS: dict[type, LuaView] = {}


def view_of(obj: Any) -> LuaView:
    """The view for objects of ``obj``'s class (made on first use)."""
    return view_of_class(type(obj))


def view_of_class(cls: type) -> LuaView:
    """The view for objects of class ``cls`` (made on first use)."""
    view = VIEWS.get(cls)
    if view is None:
        view = VIEWS[cls] = _make_view(cls)
    return view


#: ``binder(func, view)``: a function of no argument that calls ``func(view)``, made in
#: the Lua state of ``func`` (``runtime.py`` gives it to the constructors that take one),
#: or ``None`` when ``func`` is not a Lua function.
Binder = Callable[[Any, LuaView], Any]

#: What calls a Lua function for an object of a given class: the view to point at the
#: object, and the function to call then (with no argument).
BoundCalls = dict[type, tuple[LuaView, Callable[[], Any]]]


def bind_calls(
    func: Callable[[Any], Any], binder: Binder | None, classes: tuple[type, ...]
) -> BoundCalls:
    """How to call ``func`` for an object of each of ``classes``.

    With a binder the view is handed to Lua once, as an upvalue of a closure, and each
    call has no argument to convert; without one (or for a function that is not Lua's)
    each call passes the view."""
    calls: BoundCalls = {}
    for cls in classes:
        view = view_of_class(cls)
        bound = binder(func, view) if binder is not None else None
        if bound is None:
            # Not callable: the error comes when the rule runs, as it did before views.
            bound = partial(func, view) if callable(func) else partial(_call_later, func, view)
        calls[cls] = (view, bound)
    return calls


def call_with_view(func: Callable[[Any], Any], obj: Any) -> Any:
    """``func(obj)`` with the view pointed at ``obj`` for the time of the call.

    Calls nest (a Lua function may call Python that calls Lua again): the view is
    pointed back at what it showed before.  An object that is already a view (passed
    back from Lua) stands for its target."""
    if isinstance(obj, LuaView):
        obj = obj.target
    view = view_of(obj)
    previous = view.target
    view.target = obj
    try:
        return func(view)
    finally:
        view.target = previous


def _call_later(func: Any, view: LuaView) -> Any:
    return func(view)


def own_view(cls: type) -> LuaView:
    """A view of objects of class ``cls`` for one holder alone, pointed at its object for
    as long as the holder keeps it. A Python action's function awaits while other queries'
    calls point the shared view elsewhere, so it gets a view of its own
    (``pyactions.py``); the holder points it at ``DETACHED`` when it is done.

    Its class is a subclass of the shared view's, of the same name (so the same
    attributes, methods and errors), whose methods are the class's own functions rather
    than slots bound per view: a view costs one small object, made per call."""
    own_class = _OWN_CLASSES.get(cls)
    if own_class is None:
        view_class = type(view_of_class(cls))
        namespace: dict[str, Any] = {"__slots__": (), "__module__": view_class.__module__}
        namespace.update(_FORWARDERS[view_class])
        own_class = _OWN_CLASSES[cls] = type(view_class.__name__, (view_class,), namespace)
    view: LuaView = own_class()
    view.target = DETACHED
    return view


#: The class of the views ``own_view`` makes, by the class of object they show.
_OWN_CLASSES: dict[type, type] = {}


def _make_view(cls: type) -> LuaView:
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__doc__": cls.__doc__}
    methods: list[str] = []
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        if name == "target":  # the view's own slot: it would hide the object's attribute
            raise TypeError(f"{cls.__name__} has a 'target' attribute: a view cannot show it")
        static = inspect.getattr_static(cls, name)
        if isinstance(static, types.FunctionType):
            methods.append(name)
        else:
            # Properties, slots, class attributes, class and static methods: read from
            # and written to the object.
            namespace[name] = property(attrgetter("target." + name), _setter(name))
    # Each method is a slot holding a method bound to the view once and for all.
    namespace["__slots__"] = tuple(methods)
    if getattr(cls, "__dictoffset__", 0):
        # Objects with an instance dict may have attributes no class lists.
        namespace["__getattr__"] = _forward_getattr
        namespace["__setattr__"] = _forward_setattr
    view_class = type(cls.__name__, (LuaView,), namespace)
    forwarders = _FORWARDERS[view_class] = tuple((name, _forwarder(name)) for name in methods)
    view: LuaView = view_class()
    view.target = DETACHED
    for name, forwarder in forwarders:
        slot = view_class.__dict__[name]
        slot.__set__(view, types.MethodType(forwarder, view))
    return view


#: The functions each view class binds to its views' method slots (``own_view`` binds
#: them again for a view of its own).
_FORWARDERS: dict[type, tuple[tuple[str, Callable[..., Any]], ...]] = {}


def _setter(name: str) -> Callable[[LuaView, Any], None]:
    def set_value(self: LuaView, value: Any) -> None:
        setattr(self.target, name, value)

    return set_value


def _forwarder(name: str) -> Callable[..., Any]:
    def method(self: LuaView, *args: Any) -> Any:
        return getattr(self.target, name)(*args)

    method.__name__ = method.__qualname__ = name
    return method


def _forward_getattr(self: LuaView, name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(self.target, name)


def _forward_setattr(self: LuaView, name: str, value: Any) -> None:
    if name == "target":
        object.__setattr__(self, name, value)
    else:
        setattr(self.target, name, value)
