"""The benchmark: what the person at the button feels, and what the box costs.

`python -m rig.bench` (or `scripts/bench`) runs the real daemon against the
local Live server and the PulseAudio loopback, drives it through its control
socket and the loopback microphone, and measures from outside the daemon: the
server's message log, recordings of the loopback speaker and microphone, and
/proc. Beside the daemon, in the same run and on the same server and loopback,
it measures the plain Live loop of every quickstart (`rig.bench.reference`) and
`arecord` alone, so that each figure comes with a ratio that means something on
a busy machine. It prints one table and writes the same figures as JSON.
"""
