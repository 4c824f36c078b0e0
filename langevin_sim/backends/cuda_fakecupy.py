"""A strict NumPy stand-in for CuPy, used by the cuda backend under the CUDA simulator.

Under ``NUMBA_ENABLE_CUDASIM=1`` (or ``LANGEVIN_SIM_CUDA_SIM=1``) there is no GPU, so the
backend's array module `xp` is this module instead of CuPy.  Its `ndarray` wraps a NumPy
array and behaves like a CuPy array where that matters for correctness on a real device:

- implicit conversion to NumPy raises TypeError (``np.asarray(a)``, ``np.ascontiguousarray``,
  a NumPy array created from it), as CuPy's ``__array__`` does: use `asnumpy` / ``.get()``;
- a NumPy array mixed into an operation, a ufunc or a module function raises TypeError, as
  CuPy does ("Unsupported type <class 'numpy.ndarray'>"); NumPy and Python scalars are fine;
- full reductions return 0-d arrays, not NumPy scalars;
- ``get(out=...)`` refuses an `out` of another dtype or shape, or not contiguous, as CuPy
  does; `empty_pinned` stands in for ``cupyx.empty_pinned`` (a plain NumPy array here);
- streams run late: ``get(stream=s, blocking=False)`` on a `cuda.Stream` copies only when
  that stream (or an event recorded on it) is synchronized, reading the device array as it
  is then, the latest a GPU could run it.  Work on the current (null) stream runs at once,
  so a copy started before later work on the same arrays reads what that work left: code
  that hands a copy stream an array the next steps overwrite fails here as it would race
  on a GPU;
- stream capture records, as a CUDA graph does: between ``Stream.begin_capture`` and
  ``end_capture`` nothing runs; only kernel launches (`cuda_runtime.launch` records them,
  arguments as they are: arrays by reference, scalars by value) and ``matmul(a, b, out=)``
  are recorded, and any other operation on device arrays is refused (on a GPU it would
  allocate from the memory pool inside the graph, or not be captured); ``Graph.launch`` runs
  the recorded work again, so a captured step that baked a host value (a step index) replays
  it unchanged here as on a GPU;
- `empty` and `empty_like` hand out poisoned memory (NaN, or a large integer pattern), as a
  GPU's memory pool hands out freed memory unchanged: code that reads an entry before
  writing it fails here;
- NumPy functions applied to it dispatch here (``__array_function__`` / ``__array_ufunc__``),
  as they dispatch to CuPy;
- the NumPy functions and array methods CuPy does not have (`NOT_IN_CUPY`,
  `NOT_ON_CUPY_ARRAYS`: read off CuPy 14.2 next to NumPy 2.4) are refused: AttributeError on
  the module and the array, TypeError when a NumPy function of them is applied to an array.

So code that runs on these arrays without TypeError uses only the array module of its input
(or device-resident data), and runs on CuPy arrays too: the simulator tests of the cuda
backend check that every potential's gradient stays on the device or say that it does not.
The class reports ``__module__ == "cupy"`` so that `potentials.base.array_module` (which
dispatches on the module of the array type and then imports ``cupy``) returns this module;
`cuda_runtime.xp()` registers it as ``sys.modules["cupy"]`` in simulator mode, and only when
no real CuPy is imported.
"""
from __future__ import annotations

import numbers
import types

import numpy as np
import numpy.lib.mixins

FAKE = True  # lets code tell the stand-in from the real CuPy

# NumPy's public functions that CuPy 14.2 lacks, and ndarray attributes cupy.ndarray lacks
NOT_IN_CUPY = frozenset((
    "asmatrix", "block", "bmat", "busday_count", "busday_offset", "datetime_as_string",
    "datetime_data", "einsum_path", "frompyfunc", "fromregex", "geomspace", "get_include",
    "getbufsize", "geterr", "geterrcall", "histogram_bin_edges", "info", "insert", "is_busday",
    "isnat", "matvec", "nanpercentile", "nanquantile", "nested_iters", "polyder", "polydiv",
    "polyint", "setbufsize", "seterr", "seterrcall", "show_runtime", "spacing", "test",
    "unstack", "vecdot", "vecmat"))
NOT_ON_CUPY_ARRAYS = frozenset(("ctypes", "getfield", "resize", "setfield", "setflags",
                                "to_device"))


def _host_error(what: str) -> TypeError:
    return TypeError(f"Unsupported type <class 'numpy.ndarray'> ({what}): a NumPy array mixed "
                     "with device arrays (CuPy would refuse it; move it with xp.asarray first)")


_CAPTURE: list = []   # the capturing streams' recorded work (at most one stream captures)


def capturing() -> bool:
    """Whether a stream is capturing (`Stream.begin_capture`)."""
    return bool(_CAPTURE)


def record(job) -> None:
    """Add `job` (a callable) to the capturing stream's graph."""
    _CAPTURE[-1].append(job)


def _no_capture(what: str) -> None:
    if _CAPTURE:
        raise RuntimeError(f"{what} during stream capture: the stand-in captures only kernel "
                           "launches and matmul(a, b, out=) (anything else would allocate inside "
                           "the graph or run at capture time)")


def _unwrap(v, what: str):
    """The NumPy array under a stand-in array; NumPy arrays are refused (as CuPy does)."""
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, np.ndarray):
        raise _host_error(what)
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(u, what) for u in v)
    if isinstance(v, dict):
        return {k: _unwrap(u, what) for k, u in v.items()}
    return v


def unwrapped(arg):
    """A kernel argument as the simulator takes it: a stand-in array (in a tuple too) as the
    NumPy array under it."""
    if isinstance(arg, ndarray):
        return arg._a
    if isinstance(arg, tuple):
        return tuple(unwrapped(a) for a in arg)
    return arg


def _unwrap_index(key):
    """Indices may mix device arrays, NumPy integer arrays (CuPy copies those), slices, ints."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k) for k in key)
    if isinstance(key, list):
        return [_unwrap_index(k) for k in key]
    return key


def _wrap(r):
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic) and not isinstance(r, (np.str_, np.bytes_)):
        return ndarray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(u) for u in r)
    if isinstance(r, list):
        return [_wrap(u) for u in r]
    return r


class ndarray(numpy.lib.mixins.NDArrayOperatorsMixin):
    """A device array of the stand-in: a NumPy array that refuses to meet NumPy arrays."""

    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- what CuPy forbids ---------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A host copy (into `out` when given), refusing the `out` CuPy refuses: not a NumPy
        array, another dtype or shape, or neither C- nor F-contiguous.  With
        ``blocking=False`` on a `cuda.Stream` the copy into `out` waits for that stream's
        synchronization (see the module docstring)."""
        if not blocking and isinstance(stream, Stream) and stream is not Stream.null:
            if out is None:
                out = np.empty(self.shape, self.dtype, order=order)
            stream.queue.append(lambda: self.get(out=out))
            return out
        if out is None:
            return np.array(self._a, order=order, copy=True)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be obtained from cupy.ndarray, not "
                            f"{type(out).__name__}")
        if out.dtype != self.dtype:
            raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
        if out.shape != self.shape:
            raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: "
                             f"{out.shape}")
        if not (out.flags.c_contiguous or out.flags.f_contiguous):
            raise RuntimeError("`out` cannot be specified when copying to non-contiguous ndarray")
        out[...] = self._a
        return out

    # -- dispatch ------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        _no_capture(f"ufunc {ufunc.__name__}")
        if ufunc.__name__ in NOT_IN_CUPY:
            raise TypeError(f"operand type(s) all returned NotImplemented from "
                            f"__array_ufunc__({ufunc!r}, ...) (CuPy has no {ufunc.__name__})")
        args = [_unwrap(i, f"ufunc {ufunc.__name__}") for i in inputs]
        if "out" in kw:
            kw["out"] = tuple(_unwrap(o, "out=") for o in kw["out"])
        return _wrap(getattr(ufunc, method)(*args, **kw))

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", str(func))
        _no_capture(f"numpy.{name}")
        if name in NOT_IN_CUPY:
            raise TypeError(f"no implementation found for 'numpy.{name}' on types that "
                            f"implement __array_function__: [<class 'cupy.ndarray'>] (CuPy has "
                            f"no {name})")
        return _wrap(func(*_unwrap(args, f"numpy.{name}"), **_unwrap(kwargs, f"numpy.{name}")))

    # -- array protocol --------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap_index(key)])

    def __setitem__(self, key, value):
        _no_capture("setitem")
        self._a[_unwrap_index(key)] = _unwrap(value, "setitem value")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(v)) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return f"array({np.array2string(self._a)}, dtype={self._a.dtype}) [cupy stand-in]"

    def __getattr__(self, name):
        # methods (sum, astype, reshape, copy, ...) and attributes of the NumPy array, with
        # arguments checked and results wrapped as for module functions
        if name.startswith("__") or name in NOT_ON_CUPY_ARRAYS:
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            _no_capture(f"ndarray.{name}")
            return _wrap(attr(*_unwrap(args, f"ndarray.{name}"),
                              **_unwrap(kwargs, f"ndarray.{name}")))
        method.__name__ = name
        return method

    def __reduce__(self):
        raise TypeError("device arrays are not pickled; copy to the host with asnumpy first")


ndarray.__module__ = "cupy"


class Stream:
    """`cupy.cuda.Stream`: work queued on it (asynchronous copies) runs at `synchronize`;
    ``with stream:`` makes it the current stream; `begin_capture` / `end_capture` record a
    `Graph` (see the module docstring)."""

    _current: list = []

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.queue: list = []
        self.ptr = 0 if null else id(self)

    def synchronize(self) -> None:
        queue, self.queue = self.queue, []
        for job in queue:
            job()

    def wait_event(self, event) -> None:
        """Work on other streams ran when it was queued: nothing to wait for."""

    def __enter__(self):
        Stream._current.append(self)
        return self

    def __exit__(self, *exc):
        Stream._current.pop()

    def begin_capture(self, mode=None) -> None:
        if self is Stream.null:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _CAPTURE:
            raise RuntimeError("a stream is capturing already")
        _CAPTURE.append([])

    def end_capture(self) -> "Graph":
        return Graph(_CAPTURE.pop())

    def is_capturing(self) -> bool:
        return bool(_CAPTURE)


class Graph:
    """`cupy.cuda.Graph`: `launch` runs the captured work, in order (at once: the work of the
    null stream runs when queued)."""

    def __init__(self, jobs: list):
        self.jobs = jobs

    def launch(self, stream=None) -> None:
        _no_capture("Graph.launch")
        for job in self.jobs:
            job()


class Event:
    """`cupy.cuda.Event`: synchronizing it runs the work queued on its stream."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.stream = None

    def record(self, stream=None) -> None:
        self.stream = stream

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()


Stream.null = Stream(null=True)
cuda = types.SimpleNamespace(
    Stream=Stream, Event=Event, Graph=Graph,
    get_current_stream=lambda device=None: Stream._current[-1] if Stream._current else Stream.null)


def matmul(a, b, out=None, **kwargs):
    """`cupy.matmul`; recorded during stream capture (into `out`, which capture needs)."""
    if _CAPTURE:
        if not isinstance(out, ndarray) or kwargs:
            raise RuntimeError("matmul during stream capture needs out= (a device array) and no "
                               "other keyword: its result would be allocated inside the graph")
        A, B, O = _unwrap(a, "matmul"), _unwrap(b, "matmul"), out._a
        record(lambda: np.matmul(A, B, out=O))
        return out
    return _wrap(np.matmul(*_unwrap((a, b), "matmul"), out=_unwrap(out, "out="),
                           **_unwrap(kwargs, "matmul")))


# creation functions that accept host data (CuPy copies it to the device)
_FROM_HOST = {"asarray", "array", "asanyarray", "ascontiguousarray"}


def _host_ok(v):
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, (list, tuple)):
        return type(v)(_host_ok(u) for u in v)
    return v


def asnumpy(a, stream=None, out=None):
    """A NumPy copy of a device array (NumPy input is returned as a NumPy array)."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, out=out)
    return np.array(a, copy=True)


def empty_pinned(shape, dtype=float, order="C") -> np.ndarray:
    """`cupyx.empty_pinned`: an uninitialized NumPy array (page-locked on a GPU; plain here)."""
    return np.empty(shape, dtype, order)


def _poisoned(a: np.ndarray) -> "ndarray":
    """`a` filled with what fresh device memory may hold, as far as a test can tell: NaN in
    floats, a large pattern in integers, so that code reading an `empty` array before writing
    it fails here as it would (by chance) on a GPU, whose pool hands out freed memory as is."""
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    elif a.dtype.kind in "iu":
        a.fill(np.iinfo(a.dtype).max - 12345)
    return ndarray(a)


def empty(shape, dtype=float, order="C"):
    """`cupy.empty`: uninitialized memory (poisoned here, `_poisoned`)."""
    _no_capture("empty")
    return _poisoned(np.empty(shape, dtype, order))


def empty_like(a, dtype=None, order="K", shape=None):
    """`cupy.empty_like`: uninitialized memory (poisoned here, `_poisoned`)."""
    _no_capture("empty_like")
    return _poisoned(np.empty_like(_unwrap(a, "empty_like"), dtype, order, shape=shape))


def get_array_module(*args):
    return __import__(__name__, fromlist=["_"])


def __getattr__(name):
    if name in NOT_IN_CUPY:
        raise AttributeError(f"module 'cupy' has no attribute '{name}'")
    attr = getattr(np, name)
    if isinstance(attr, (type, numbers.Number)) or attr is None or not callable(attr):
        return attr   # dtypes, constants (pi, inf, newaxis)
    if isinstance(attr, np.ufunc):
        def ufunc(*args, **kwargs):
            _no_capture(f"ufunc {name}")
            return _wrap(attr(*_unwrap(args, f"ufunc {name}"), **_unwrap(kwargs, f"ufunc {name}")))
        ufunc.__name__ = name
        return ufunc
    if name in _FROM_HOST:
        def create(obj, *args, **kwargs):
            _no_capture(name)
            if isinstance(obj, ndarray):          # on the device already: no copy unless cast
                return ndarray(attr(obj._a, *args, **kwargs))
            # host data is copied to the "device": never an alias of a host array
            return ndarray(np.array(attr(_host_ok(obj), *args, **kwargs), copy=True))
        create.__name__ = name
        return create

    def fn(*args, **kwargs):
        _no_capture(name)
        return _wrap(attr(*_unwrap(args, f"{name}"), **_unwrap(kwargs, f"{name}")))
    fn.__name__ = name
    return fn
