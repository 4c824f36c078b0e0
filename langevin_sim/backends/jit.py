"""Numba options in one place: no fastmath (parity with the reference), on-disk cache."""
from __future__ import annotations

import types

import numba

OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def jit(fn):
    """Compile a scalar/array helper for the CPU (serial)."""
    return numba.njit(**OPTIONS)(fn)


def pjit(fn):
    """Compile a kernel parallel over replicas with prange."""
    return numba.njit(parallel=True, **OPTIONS)(fn)


def compile_functions(module, names, compiler=jit) -> types.SimpleNamespace:
    """Compile plain-Python reference functions of `module` that call each other by global
    name: each copy sees the compiled versions of its siblings (one algorithm, another
    target).  `compiler` is e.g. `jit` or `numba.cuda.jit(device=True)`."""
    env = dict(vars(module))
    out = {}
    for name in names:
        f = getattr(module, name)
        g = types.FunctionType(f.__code__, env, f.__name__, f.__defaults__, f.__closure__)
        g.__qualname__, g.__module__ = f.__qualname__, f.__module__
        out[name] = env[name] = compiler(g)
    return types.SimpleNamespace(**out)
