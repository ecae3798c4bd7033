"""The soak: the real daemon for an hour or more of turns and faults, in both modes.

`python -m rig.soak` (or `scripts/soak`) runs the daemon as systemd would,
against the local Live server and the PulseAudio loopback, as the benchmark does.
A seeded plan (`plan`) of episodes of turns, each followed by silence, is played
by a person at the box (`person`) while the server strikes faults on cue
(`wire`). What the run finds is counted (`tally`), each daemon's tasks, threads,
descriptors and memory read from outside it (`vitals`), and the verdict printed
and written as JSON (`report`). Exit status 1 when a must-be-zero figure is not.
"""
