"""Numba options in one place: no fastmath (parity with the reference), on-disk cache."""
from __future__ import annotations

import math
import types

import numba
import numpy as np
from numba.core import types as nbtypes
from numba.extending import intrinsic

OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def jit(fn):
    """Compile a scalar/array helper for the CPU (serial)."""
    return numba.njit(**OPTIONS)(fn)


def ijit(fn):
    """Compile a small scalar helper that Numba inlines into its callers (at Numba-IR level,
    before LLVM sees the loop): LLVM cannot vectorize a loop that still calls a function,
    and Numba links separately compiled functions only after LLVM's loop passes."""
    return numba.njit(inline="always", **OPTIONS)(fn)


def one_blas_thread():
    """Context manager: BLAS single-threaded inside it (kernels that call BLAS from their own
    threads, record-time energies and observables).  One `ThreadpoolController`, made on first
    use, serves every call: `threadpool_limits()` rescans the loaded libraries (/proc maps)
    each time, ~5 ms, which was most of a small run's cost per record."""
    global _BLAS
    if _BLAS is None:
        import scipy.linalg.cython_blas  # noqa: F401  (SciPy's BLAS, loaded before the scan)
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


_BLAS = None


def pjit(fn):
    """Compile a kernel parallel over replicas with prange."""
    return numba.njit(parallel=True, **OPTIONS)(fn)


def select_scalar(cond, a, b):
    """Scalar form of `rng.select` for targets that compile Python control flow (CUDA)."""
    return a if cond else b


@intrinsic
def select_cpu(typingctx, cond, a, b):
    """`rng.select` for the CPU: one LLVM select instruction (a blend when vectorized).
    A conditional expression would work too, but inlined several levels deep (overloads
    inlining helpers that inline `select`) it trips Numba's IR scope check."""
    ty = typingctx.unify_types(a, b)

    def codegen(context, builder, sig, args):
        c = context.cast(builder, args[0], sig.args[0], nbtypes.boolean)
        x = context.cast(builder, args[1], sig.args[1], ty)
        y = context.cast(builder, args[2], sig.args[2], ty)
        return builder.select(c, x, y)
    return ty(cond, a, b), codegen


def sqrt_scalar(x):
    """Scalar square root for compiled targets (np.sqrt on scalars blocks vectorization)."""
    return math.sqrt(x)


def exp_scalar(x):
    """Scalar exponential for compiled targets (numba-cuda compiles no np.exp)."""
    return math.exp(x)


def table_index_scalar(nodes, s):
    """Scalar form of `potentials.manifolds.table_index`: the last i <= n - 2 with
    nodes[i] <= s, by a scan (short tables)."""
    i = 0
    while i < nodes.shape[0] - 2 and nodes[i + 1] <= s:
        i += 1
    return i


def bitcast(src, dst):
    """An intrinsic reinterpreting the bits of a `src` value (after conversion to src) as
    `dst` (numba types of equal width): one LLVM bitcast, free when vectorized."""
    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], src)
            return builder.bitcast(v, context.get_value_type(dst))
        return dst(x), codegen
    return cast


def row_sum_loop(a):
    """`rng.row_sum` compiled: each row summed in a's dtype, in order (as Numba's axis sum,
    without its axis check, whose error formatting costs seconds of compilation)."""
    out = np.zeros(a.shape[0], a.dtype)
    for r in range(a.shape[0]):
        acc = out[r]
        for i in range(a.shape[1]):
            acc += a[r, i]
        out[r] = acc
    return out


def set_column_loop(a, j, v):
    """`rng.set_column` compiled: a loop (an array assignment compiles Numba's shape-error
    formatting, seconds per kernel)."""
    for r in range(a.shape[0]):
        a[r, j] = v[r]


# Scalar forms of the reference's array primitives, per target: any target that compiles
# Python control flow (numba-cuda, its simulator), and the CPU.
PRIMITIVES = {"select": select_scalar, "sqrt": sqrt_scalar, "exp": exp_scalar,
              "table_index": table_index_scalar}
CPU_PRIMITIVES = dict(PRIMITIVES, select=select_cpu, row_sum=row_sum_loop,
                      set_column=set_column_loop,
                      float_bits=bitcast(nbtypes.float64, nbtypes.int64),
                      bits_float=bitcast(nbtypes.int64, nbtypes.float64),
                      float32_bits=bitcast(nbtypes.float32, nbtypes.int32),
                      bits_float32=bitcast(nbtypes.int32, nbtypes.float32))


def compile_functions(module, names, compiler=jit, primitives=CPU_PRIMITIVES) -> types.ModuleType:
    """Compile the plain-Python reference functions `names` of `module` (a module or any
    namespace), which call each other by global name: each copy sees the compiled versions of
    its siblings (one algorithm, another target) and, for every other name, the globals of
    the module that defines it as they are at this call (so the functions may come from
    several modules, and a module may compile its own functions once they are defined).
    Names in `primitives` are replaced by their scalar forms (Python functions are compiled,
    intrinsics used as they are).  `compiler` is e.g. `jit`, `ijit` or
    `numba.cuda.jit(device=True)` with `primitives=PRIMITIVES`.

    Returns a module object holding the compiled copies: compiled code calls them as
    attributes of a global (``cpu.dw_grad(x, ...)`` with ``cpu = compile_functions(...)``),
    which Numba resolves at compile time like any module attribute (and inlines `ijit`
    copies), so the plain-Python originals keep their names for the other targets."""
    envs: dict[int, dict] = {}   # id of a defining module's globals -> the copies' globals
    out = {}
    for name in names:
        f = primitives.get(name, getattr(module, name))
        if not isinstance(f, types.FunctionType):
            out[name] = f
            continue
        env = envs.setdefault(id(f.__globals__), dict(f.__globals__))
        g = types.FunctionType(f.__code__, env, f.__name__, f.__defaults__, f.__closure__)
        g.__qualname__, g.__module__ = f.__qualname__, f.__module__
        out[name] = compiler(g)
    for env in envs.values():   # compilation is lazy: the copies see their siblings
        env.update(out)
    compiled = types.ModuleType(f"{getattr(module, '__name__', 'functions')}.compiled")
    compiled.__dict__.update(out)
    return compiled
