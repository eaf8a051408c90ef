"""How the kernels are compiled, and the bit casts they need."""

from llvmlite import ir
from numba import njit, types
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic


class TypeDispatcher(CPUDispatcher):
    """A dispatcher that compiled code calls with the *types* of its arguments.

    Numba types a constant argument (``False``, ``0``, ``PROBE_NEWTON``) as a literal of
    its value, and a call with a constant compiled the callee anew for that value, with
    everything it calls: the right-hand side twice (``left`` given and ``False``), the
    Newton solver, probes and eigenvalue check twice.  Typing such calls by the value's
    type compiles each kernel once per argument type (the cold compile of a single run
    fell by a fifth).  Python callers are typed by value types anyway.
    """

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


def kernel_njit(function=None, *, per_constant=False, **options):
    """``njit(cache=True, **options)``, compiled once per argument type (see
    :class:`TypeDispatcher`), or with ``per_constant`` once per constant argument as well,
    where a constant is meant to specialise the kernel (the stimulus kinds of the lockstep
    lanes: each kind's branches fold away)."""
    def decorate(function):
        dispatcher = njit(cache=True, **options)(function)
        # (not a dispatcher under NUMBA_DISABLE_JIT)
        if isinstance(dispatcher, CPUDispatcher) and not per_constant:
            dispatcher.__class__ = TypeDispatcher
        return dispatcher
    return decorate if function is None else decorate(function)


def borrowing_njit(function=None, *, called_from_python=False, **options):
    """:func:`kernel_njit` without reference counting, for kernels that only index arrays
    their caller owns.

    Numba counts references to each array a compiled function receives, with atomic
    increments it cannot prune around loops or calls; in the tap-withdrawal right-hand
    side that bookkeeping took two thirds of the time (1.05 → 0.3 µs without it).  A
    function compiled so must not allocate, return an array, or call a function that
    returns one (the caller would never release it).

    Unless ``called_from_python``, it gets no Python entry point (the wrapper that unboxes
    arguments), which saves a cold start about a second over these many small kernels.
    """
    return kernel_njit(function, _nrt=False, no_cpython_wrapper=not called_from_python,
                       **options)


def bit_cast(source, target, llvm_target, doc: str):
    """A compiled function reinterpreting the bits of a ``source`` number as ``target``
    (a free register move, unlike an array view)."""
    def cast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_target)
        return target(source), codegen
    cast.__doc__ = doc
    return intrinsic(cast)


float_bits = bit_cast(types.float64, types.int64, ir.IntType(64),
                      "The IEEE-754 bits of a float64 as an int64.")
bits_float = bit_cast(types.int64, types.float64, ir.DoubleType(),
                      "The float64 whose IEEE-754 bits are the int64 x.")
float32_bits = bit_cast(types.float32, types.int32, ir.IntType(32),
                        "The IEEE-754 bits of a float32 as an int32.")
bits_float32 = bit_cast(types.int32, types.float32, ir.FloatType(),
                        "The float32 whose IEEE-754 bits are the int32 x.")
