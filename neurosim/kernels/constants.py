"""Numbers shared by the kernels and the Python that reads their results.

Kernels report failure as numbers; :data:`neurosim.integrators.STATUS_MESSAGES` turns
them into sentences.
"""

# kernel status codes
OK = 0
NON_FINITE = 1          # a potential became NaN or ±inf
OUT_OF_BOUNDS = 2       # |V| exceeded the run's v_bound
STEP_UNDERFLOW = 3      # the adaptive step shrank below the float resolution of t
TOO_MANY_STEPS = 4      # an adaptive run exceeded its max_steps (accepted + rejected)

# the stimulus tables compile writes (DESIGN.md: compile is the layer above the kernels,
# which read its tables; the layout is compile's)
from neurosim.compile.tables import (N_STIM_PARAMS, P_AMPLITUDE, P_COUNT, P_DURATION,  # noqa: F401
                                     P_END, P_OFFSET, P_OMEGA, P_PERIOD, P_PHASE, P_START,
                                     PULSE, PULSE_TRAIN, RAMP, REPEAT_ROW, SINE, STEP, STEPS,
                                     TABLE)

# integer statistics a run accumulates (index into the stats array)
S_STEPS, S_REJECTED, S_RHS, S_JACOBIANS, S_FAIL_NEURON, S_FAIL_STEP = range(6)
N_STATS = 6

# rows of the scratch array the network functions use: V_in, I, G, N, sigmoid per neuron
# (SPLIT_ROWS, all the lockstep lanes use), and a block of synapses with sigmoids of
# their own (conductance_split)
SPLIT_ROWS = 5
WORK_ROWS = 6

# float solver state carried across chunks (index into the solver-state array)
# (X_F_CARRIED is 1 once a call has left f(t, V) of the state it ends at in the carry, so
# the next call need not evaluate it again: counts do not depend on how a run is cut)
X_T, X_H, X_ERR_OLD, X_FAIL_T, X_STEP_T, X_STEP_H, X_F_CARRIED = range(7)
N_SOLVER_STATE = 7
# rows of an adaptive run's carry: the stages of the step it carries, that step's start V,
# and f at the state the run stands at
CARRY_ROWS = 9

# method codes of the fixed-step loop
EULER, RK4, EXP_EULER, LTC = range(4)
# method codes of the adaptive loop
DOPRI5, ROSENBROCK23 = range(2)

# Step-size control (Hairer, Nørsett & Wanner I, II.4): safety factor, bounds on the
# change of h per step, PI exponent on the previous error.
SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0
PI_BETA = 0.04
