"""The layout of the stimulus tables compile writes and the kernels read.

A protocol's stimuli become rows: a waveform kind, a target neuron and a parameter
vector with the columns below (a stimulus with several targets repeats its first row's
value, computed once).  Plain numbers only: the kernels import them as compile-time
constants.
"""

# waveform kinds (order matches neurosim.model.STIMULUS_KINDS)
STEP, PULSE, PULSE_TRAIN, RAMP, SINE, TABLE, STEPS = range(7)
# a stimulus's later targets: the row takes the value of the row above, computed once
REPEAT_ROW = -1

# columns of a compiled stimulus row's parameter vector; P_END is start + duration rounded
# once in Python, as the breakpoints are, so that the kernel's waveform ends exactly there
P_OFFSET, P_AMPLITUDE, P_START, P_DURATION, P_PERIOD, P_COUNT, P_OMEGA, P_PHASE, P_END = range(9)
N_STIM_PARAMS = 9
