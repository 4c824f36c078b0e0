"""Fused kernels, one module per potential family; importing this package registers them all.

Layout:

    common.py             the shared step rules (`STEPS`: updates, noise scale, BAOAB pieces,
                          schedules, the divergence test) and `compile_steps`; the CPU pieces
                          every family uses (in-kernel normals, divergence freezing, step
                          coefficients, SGD and overdamped row updates, first-passage regions)
    double_well.py        DoubleWell x OverdampedLangevin, UnderdampedLangevin, OBABO (CPU); its row
                          function for `rows`
    quadratic.py          Quadratic x OverdampedLangevin, UnderdampedLangevin
    linear_regression.py  LinearRegression: hooks only (every dynamics by the generic drivers)
    pspin.py              SphericalPSpin x OverdampedLangevin
    toynets.py            TeacherStudentMLP, ModularArithmeticMLP, ClassifierMLP x SGD, AdamW
    manifolds.py          ScaleSymmetric, Valley, MultiWell, ShiftedMultiWell: hooks and row
                          functions only
    rows.py               "cuda": one fused kernel per dynamics for every family that gives a
                          row function (`rows.row_family`): its loss and gradient at one replica
    drivers.py            every other pair: one generic driver per dynamics, compiled per family
                          from the family's block hooks (`drivers.Hooks`, at the end of each
                          family module)

A family module holds, in this order: its step functions (plain Python, scalar, named in
`STEPS`; every target compiles them with `common.compile_steps`, the shared rules included),
then per backend its kernels and the adapters that register them with
``@register(Potential, Dynamics, backend)`` (`backends.registry`).  Compiled code calls a
target's copies through the module `compile_steps` returns (``cpu.baoab_step(...)``).

Adding a fused kernel for a new pair touches the potential family's module only:

1. the step functions the pair needs beyond `common.STEPS`, as plain scalar Python calling
   the potential's and the dynamics' own functions (import them), named in `STEPS`;
2. the CPU kernel, calling their compiled copies ``cpu = compile_steps(sys.modules[__name__])``
   and the CPU pieces of `common` (noise, freezing, schedules);
3. its adapter ``fn(sim, t0, K, k0, k1)``, decorated ``@register(Potential, Dynamics, "numba")``
   (``first_passage=True`` only if it updates first-passage observers).

On "cuda", a low-dimensional family needs only its row function: a step function
``row(x, g, w, args, idx, nb, energy)`` named in `STEPS`, registered with `rows.row_family`
(see `rows`).
A new family is a new module here, added to the import line below and to `FAMILIES`; its
`drivers.Hooks` (``family(Cls, Hooks(...))``) give every dynamics a fused generic kernel.
tests/test_fused_pairs.py runs every registered pair against the reference (give the class a
small instance in its `POTS`), tests/test_cudasim.py a new family's step functions under the
CUDA simulator; docs/extending.md lists every step of adding a potential.
"""
from . import double_well, drivers, linear_regression, manifolds, pspin, quadratic, rows, toynets

FAMILIES = (double_well, quadratic, linear_regression, pspin, toynets, manifolds)
drivers.register_generic()   # after every family: its dedicated kernels stay
rows.register_rows()
