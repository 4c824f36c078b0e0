"""Fixed-width vector lanes for the CPU kernels' own reductions (`gemm.row_dots`): sums whose
order is written in the source, not chosen by LLVM for the CPU it compiles for.

A reduction that LLVM vectorizes by reassociation (`fastmath` "reassoc") splits the sum into
as many partial sums as its vector width and unroll factor for the target: the same kernel
gave other bits compiled for an Intel AVX-512 core (256-bit vectors preferred) than for a
Zen 4 (512-bit), so a run resumed, or a scan point rerun, on the other kind of node left its
trajectory.  Here a value of type `Lanes` is one LLVM vector of `LANE_BYTES` (64) bytes (8
float64 or 16 float32 lanes, whatever the CPU's registers): lane l of a sum over q collects
the terms q = l (mod lanes) in order by fused multiply-adds (`llvm.fma`, one rounding each),
and `lane_sum` adds the lanes in a fixed halving tree.  Lane-wise IEEE operations round the
same on every target (a narrower CPU splits the vector, an FMA-less one calls libm's fma), so
the bits depend on the inputs only.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANE_BYTES = 64     # one AVX-512 register: 8 float64 or 16 float32 lanes


class Lanes(types.Type):
    """`n` lanes of the float type `dtype` (an LLVM vector)."""

    def __init__(self, dtype: types.Float, n: int):
        self.dtype, self.n = dtype, n
        super().__init__(name=f"Lanes({dtype}, {n})")


@register_model(Lanes)
class LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(),
                                                     fe_type.n))


def _fma(context, builder, sig, args):
    """llvm.fma on the arguments' LLVM type (a vector or a scalar)."""
    ty = args[2].type
    suffix = (f"v{ty.count}{ty.element.intrinsic_name}" if isinstance(ty, ir.VectorType)
              else ty.intrinsic_name)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3),
                                        f"llvm.fma.{suffix}")
    return builder.call(fn, args)


def _lanes_of(dtype) -> Lanes | None:
    if not isinstance(dtype, types.Float):
        return None
    return Lanes(dtype, LANE_BYTES // (dtype.bitwidth // 8))


@intrinsic
def lane_zeros(typingctx, a):
    """Lanes of zeros of the array a's float dtype."""
    ty = _lanes_of(a.dtype) if isinstance(a, types.Array) else None
    if ty is None:
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(ty), None)
    return ty(a), codegen


@intrinsic
def lane_count(typingctx, a):
    """The number of lanes of the array a's float dtype, a constant of the compiled code
    (`a.itemsize` is read from the array at run time: a loop stepping by it is not unrolled
    or strength-reduced as one stepping by a constant)."""
    ty = _lanes_of(a.dtype) if isinstance(a, types.Array) else None
    if ty is None:
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, ty.n)
    return types.intp(a), codegen


def _row(a, i, q) -> bool:
    return (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
            and isinstance(i, types.Integer) and isinstance(q, types.Integer)
            and _lanes_of(a.dtype) is not None)


def _at(context, builder, sig, args, j=0):
    """Pointer to a[i, q + j] of a C-contiguous 2-D array (args a, i, q)."""
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    i, q = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:3], sig.args[1:3]))
    row = builder.mul(i, cgutils.unpack_tuple(builder, arr.shape, 2)[1])
    return builder.gep(arr.data, [builder.add(builder.add(row, q), ir.Constant(q.type, j))])


@intrinsic
def lane_load(typingctx, a, i, q, r):
    """Lanes of a[i, q], a[i, q + 1], .. of a C-contiguous 2-D float array, r of them left in
    the row (r >= 1; q + min(r, lanes) <= a.shape[1], not checked): one vector load where
    r >= lanes (a constant r folds the test away), else the r entries and zeros after them,
    the last, partial lanes of a sum (they add +0 to the others)."""
    if not (_row(a, i, q) and isinstance(r, types.Integer)):
        return None
    ty = _lanes_of(a.dtype)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(ty)
        r = context.cast(builder, args[3], sig.args[3], types.intp)
        full = builder.icmp_signed(">=", r, ir.Constant(r.type, ty.n))
        with builder.if_else(full) as (whole, part):
            with whole:
                at_whole = builder.block
                v_whole = builder.load(builder.bitcast(_at(context, builder, sig, args),
                                                       vty.as_pointer()),
                                       align=a.dtype.bitwidth // 8)
            with part:
                zero = ir.Constant(context.get_value_type(a.dtype), 0)
                v_part = ir.Constant(vty, None)
                for j in range(ty.n):   # lane j: a[i, q + j] if j < r, else 0 (reading a[i, q])
                    inside = builder.icmp_signed("<", ir.Constant(r.type, j), r)
                    at = builder.select(inside, _at(context, builder, sig, args, j),
                                        _at(context, builder, sig, args))
                    v = builder.select(inside, builder.load(at), zero)
                    v_part = builder.insert_element(v_part, v, cgutils.int32_t(j))
                at_part = builder.block
        out = builder.phi(vty)
        out.add_incoming(v_whole, at_whole)
        out.add_incoming(v_part, at_part)
        return out
    return ty(a, i, q, r), codegen


@intrinsic
def lane_fma(typingctx, u, v, acc):
    """acc + u v lane by lane, one rounding (llvm.fma)."""
    if not (isinstance(acc, Lanes) and u == acc and v == acc):
        return None

    return acc(u, v, acc), _fma


@intrinsic
def lane_sum(typingctx, v):
    """The sum of the lanes in a fixed halving tree: the upper half added to the lower half,
    lane by lane, until one lane is left."""
    if not isinstance(v, Lanes):
        return None

    def codegen(context, builder, sig, args):
        x, n = args[0], v.n
        while n > 1:
            n //= 2
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                          list(range(n))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                          list(range(n, 2 * n))))
            x = builder.fadd(lo, hi)
        return builder.extract_element(x, cgutils.int32_t(0))
    return v.dtype(v), codegen
