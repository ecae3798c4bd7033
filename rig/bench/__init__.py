"""The benchmark: what the person at the button feels, and what the box costs.

`python -m rig.bench` (or `scripts/bench`) runs the real daemon against the
local Live server and the PulseAudio loopback, drives it through its control
socket and the loopback microphone, and measures from outside the daemon: the
server's message log, recordings of the loopback speaker and microphone, and
/proc. It prints one table and writes the same figures as JSON.
"""
