"""The registry: :data:`ESTIMATORS`, from name to class, the one list of estimator names, and
:func:`register`, how every estimator joins it: each built-in in its own file
(``@register(name)`` above its class) and a plugin the same way, in a module a run's config
names in ``plugins``."""

from __future__ import annotations

from collections.abc import Callable

from vae.estimators.base import Estimator

#: Every registered estimator by name, in the order they registered (vae/estimators/__init__.py
#: imports the built-ins' files in that order; the tables and figures order by declarations).
ESTIMATORS: dict[str, type[Estimator]] = {}


def register(name: str) -> Callable[[type[Estimator]], type[Estimator]]:
    """Class decorator: add an :class:`Estimator` subclass to the registry as ``name``::

        @register("my-estimator")
        class MyEstimator(Estimator): ...
    """
    def add(cls: type[Estimator]) -> type[Estimator]:
        if not (isinstance(cls, type) and issubclass(cls, Estimator)):
            raise TypeError(f"register({name!r}): {cls!r} is not a subclass of vae.estimators.Estimator")
        if ESTIMATORS.get(name, cls) is not cls:
            raise ValueError(f"register({name!r}): the name is taken by {ESTIMATORS[name].__qualname__}")
        ESTIMATORS[name] = cls
        return cls
    return add
