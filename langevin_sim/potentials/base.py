"""Potential base class: the loss surface U(x) on replica batches x of shape (M, d)."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, RunFileError
from ..io.format import json_default

REGISTRY: dict[str, type["Potential"]] = {}
DIGEST = "sha256:"      # attribute prefix of a regenerated array's digest in /potential


def array_digest(a) -> str:
    """SHA-256 (hex) of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)
    return h.hexdigest()


def array_module(x):
    """NumPy or CuPy, whichever holds `x`."""
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy
    return np


def _checking_x(method):
    """`method(self, x, ...)` behind `self.check_x(x)`: the one shape check of the public
    energy and grad of every potential."""
    @functools.wraps(method)
    def checked(self, x, *args, **kw):
        return method(self, self.check_x(x), *args, **kw)

    checked.checks_x = True
    return checked


def short_repr(value, max_size: int = 8) -> str:
    """repr of a parameter: an array of at most `max_size` numbers as a list (re-runnable),
    a larger one as <(shape) array>."""
    if isinstance(value, np.ndarray) or (isinstance(value, (list, tuple)) and value
                                         and isinstance(value[0], (list, tuple, np.ndarray))):
        a = np.asarray(value)
        return repr(a.tolist()) if a.size <= max_size else f"<{a.shape} array>"
    return repr(value)


class Potential:
    """A loss surface U: R^d -> R evaluated on (M, d) replica batches.

    Subclasses define `energy(x) -> (M,)`, `grad(x) -> (M, d)`, `params()` (JSON-able
    scalars) and `arrays()` (the instance's arrays, stored in the run file), and are
    rebuilt by `cls(**params, **arrays)`.  Finite-sum losses also set `n_samples` and
    accept `grad(x, batch)` with `batch` an (M, B) int array of sample indices.  Methods
    take device arrays too (backend "cuda"): NumPy functions that dispatch to CuPy
    (`np.zeros_like`, not `np.zeros`) or `array_module(x)`.  Adding one: docs/extending.md.
    """

    name: ClassVar[str] = ""
    n_samples: int | None = None
    constrained: ClassVar[bool] = False
    # True where energy and gradient multiply the whole (M, d) batch by a matrix in one
    # product (BLAS, cuBLAS): how the library blocks it can depend on M, and with it the
    # rounding, so a replica split (`first_replica`) reproduces trajectories to rounding, not
    # bit for bit (design_changes 31).  The random numbers stay bit-identical.
    batched_products: ClassVar[bool] = False
    d: int

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        REGISTRY[cls.__name__] = cls
        for name in ("energy", "grad"):     # the public methods check x's shape (check_x)
            method = getattr(cls, name)
            if not getattr(method, "checks_x", False):
                setattr(cls, name, _checking_x(method))

    # -- contract ---------------------------------------------------------
    def energy(self, x):
        raise NotImplementedError(f"{type(self).__name__} defines no energy(x) -> (M,) "
                                  "(docs/extending.md)")

    def grad(self, x, batch=None):
        raise NotImplementedError(f"{type(self).__name__} defines no grad(x, batch=None) -> "
                                  "(M, d) (docs/extending.md)")

    def check_contract(self) -> None:
        """ConfigError where the instance breaks what a run needs of it: an integer dimension
        `d` >= 1, and `params()` and `arrays()` that `cls(**params, **arrays)` takes (a run
        file rebuilds the potential so; a key __init__ does not take wrote a file that
        `open_run(...).potential` and `resume` then refused with a bare TypeError)."""
        name = type(self).__name__
        d = getattr(self, "d", None)
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ConfigError(f"{name} has no dimension d (got {d!r}): a Potential sets "
                              "self.d, an int >= 1, in __init__ (docs/extending.md)")
        regenerated = self.regenerated()
        kw = {**self.params(), **{k: v for k, v in self.arrays().items() if k not in regenerated}}
        try:
            inspect.signature(type(self)).bind(**kw)
        except TypeError as e:
            raise ConfigError(f"{name}(**params(), **arrays()) fails ({e}): a run file rebuilds "
                              f"the potential from them, so their keys {sorted(kw)} must be "
                              f"{name}.__init__'s arguments (docs/extending.md)") from None

    def check_shapes(self, x: np.ndarray) -> None:
        """ConfigError unless energy(x) is (M,) and grad(x) is (M, d) at positions x (M, d):
        a grad of (M, 1) or a scalar broadcast into every coordinate without a word."""
        name = type(self).__name__
        M = x.shape[0]
        for what, f, want in (("energy(x)", self.energy, (M,)), ("grad(x)", self.grad, x.shape)):
            got = np.shape(f(x))
            if got != want:
                raise ConfigError(f"{name}.{what} returned shape {got} for x of shape {x.shape}; "
                                  f"it must return {want} (docs/extending.md)")

    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def check_finite(self) -> None:
        """ConfigError naming the first parameter (`params()`, nested lists and dicts
        included) or array (`arrays()`) holding inf or NaN: a NaN tilt or label noise made
        every replica diverge at step 1 with nothing naming the cause."""
        def bad(v) -> bool:
            if isinstance(v, dict):
                return any(bad(u) for u in v.values())
            if isinstance(v, (list, tuple)):
                return any(bad(u) for u in v)
            return isinstance(v, float) and not np.isfinite(v)

        name = type(self).__name__
        for key, v in self.params().items():
            if bad(v):
                raise ConfigError(f"{name}: {key} must be finite, got {v!r}")
        for key, a in self.arrays().items():
            a = np.asarray(a)
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise ConfigError(f"{name}: the array {key!r} holds inf or NaN "
                                  f"({int((~np.isfinite(a)).sum())} of {a.size} entries)")

    def regenerated(self) -> tuple[str, ...]:
        """Names of `arrays()` entries that `cls(**params())` alone rebuilds bit for bit (drawn
        from the instance's seed): a run file keeps their SHA-256 digests instead of the arrays
        and checks them when it rebuilds the potential (design_changes 95).  Default: none."""
        return ()

    def observables(self, x, energy=None) -> dict[str, np.ndarray]:
        """Extra per-replica observables recorded with the energy: name -> (M, ...).  `energy`
        (M,) float64: x's energies where the caller has them (a record does), so that
        observables derived from the energy do not compute it again."""
        return {}

    # -- generic helpers --------------------------------------------------
    def hvp(self, x, v, eps: float = 1e-5):
        """Hessian-vector products (M, d) by central differences of the gradient."""
        return (self.grad(x + eps * v) - self.grad(x - eps * v)) / (2 * eps)

    def hessian(self, x):
        """Dense Hessians (M, d, d) column by column from `hvp` (small d only)."""
        xp = array_module(x)
        M, d = x.shape
        H = xp.empty((M, d, d), dtype=x.dtype)
        for j in range(d):
            e = xp.zeros_like(x)
            e[:, j] = 1.0
            H[:, :, j] = self.hvp(x, e)
        return 0.5 * (H + H.transpose(0, 2, 1))

    def check_x(self, x):
        """`x` itself (a list as a NumPy array), or ConfigError unless it has shape (M, d).
        Cheap: reads `.shape` only, never copies a NumPy or device array."""
        if isinstance(x, (list, tuple)):
            x = np.asarray(x, dtype=np.float64)
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.d:
            got = f"shape {tuple(shape)}" if shape is not None else type(x).__name__
            raise ConfigError(f"positions must have shape (M, {self.d}) for "
                              f"{type(self).__name__}, got {got}; one point p is x = p[None, :]")
        return x

    def default_init(self, z: np.ndarray) -> np.ndarray:
        """Initial positions from standard normals z (M, d): by default x = z."""
        return z

    # -- storage ----------------------------------------------------------
    def to_hdf5(self, group, put=None) -> None:
        """Class, parameters (JSON attributes) and arrays of the potential into the HDF5
        group; put(group, name, array) writes each array (default: `create_dataset`).  The
        `regenerated()` arrays are not written: their digests are (attribute `sha256:NAME`)."""
        group.attrs["class"] = type(self).__name__
        group.attrs["params"] = json.dumps(self.params(), default=json_default)
        regenerated = self.regenerated()
        for k, v in self.arrays().items():
            if k in regenerated:
                group.attrs[DIGEST + k] = array_digest(v)
            elif put is None:
                group.create_dataset(k, data=np.asarray(v))
            else:
                put(group, k, np.asarray(v))

    @staticmethod
    def from_hdf5(group) -> "Potential":
        cls_name = group.attrs.get("class")
        if cls_name not in REGISTRY:
            raise RunFileError(f"unknown potential class {cls_name!r} in run file; "
                               "import the module defining it before opening the run "
                               "(langevin-sim resume --import MODULE)")
        params = json.loads(group.attrs["params"])
        arrays = {k: v[()] for k, v in group.items() if not v.is_scale}  # scales label dims
        potential = REGISTRY[cls_name](**params, **arrays)
        rebuilt = potential.arrays()
        for key, digest in group.attrs.items():
            if key.startswith(DIGEST):
                name = key[len(DIGEST):]
                if name not in rebuilt or array_digest(rebuilt[name]) != digest:
                    raise RunFileError(
                        f"{cls_name}'s array {name!r} is not stored in the run file but rebuilt "
                        f"from its parameters {params}, and the rebuilt one differs from the one "
                        "the run used (SHA-256): this version of langevin_sim generates it "
                        "differently; open the file with the version that wrote it "
                        f"(package_version {group.file.attrs.get('package_version', '?')!s})")
        return potential

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, **self.params()}

    def repr_args(self) -> dict[str, Any]:
        """The keyword arguments `repr` shows: `params()`, by default (arrays drawn from the
        seed follow from it); a potential defined by arrays it was given adds those."""
        return self.params()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={short_repr(v)}" for k, v in self.repr_args().items())
        return f"{type(self).__name__}({args})"
