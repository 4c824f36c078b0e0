"""Numba options in one place: no fastmath (parity with the reference), on-disk cache."""
from __future__ import annotations

import math
import types

import numba

OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def jit(fn):
    """Compile a scalar/array helper for the CPU (serial)."""
    return numba.njit(**OPTIONS)(fn)


def ijit(fn):
    """Compile a small scalar helper that Numba inlines into its callers (at Numba-IR level,
    before LLVM sees the loop): LLVM cannot vectorize a loop that still calls a function,
    and Numba links separately compiled functions only after LLVM's loop passes."""
    return numba.njit(inline="always", **OPTIONS)(fn)


def pjit(fn):
    """Compile a kernel parallel over replicas with prange."""
    return numba.njit(parallel=True, **OPTIONS)(fn)


def select_scalar(cond, a, b):
    """Scalar form of `rng.select` for compiled targets (vectorizes to a blend)."""
    return a if cond else b


def sqrt_scalar(x):
    """Scalar square root for compiled targets (np.sqrt on scalars blocks vectorization)."""
    return math.sqrt(x)


PRIMITIVES = {"select": select_scalar, "sqrt": sqrt_scalar}


def compile_functions(module, names, compiler=jit) -> types.SimpleNamespace:
    """Compile plain-Python reference functions of `module` that call each other by global
    name: each copy sees the compiled versions of its siblings (one algorithm, another
    target).  Names in PRIMITIVES are replaced by their scalar forms.  `compiler` is e.g.
    `jit` or `numba.cuda.jit(device=True)`."""
    env = dict(vars(module))
    out = {}
    for name in names:
        f = PRIMITIVES.get(name, getattr(module, name))
        g = types.FunctionType(f.__code__, env, f.__name__, f.__defaults__, f.__closure__)
        g.__qualname__, g.__module__ = f.__qualname__, f.__module__
        out[name] = env[name] = compiler(g)
    return types.SimpleNamespace(**out)
