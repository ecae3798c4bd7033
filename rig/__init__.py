"""The test rig, used from the checkout and never installed on a box.

The local Live API server (`rig.server`), the PulseAudio loopback (`rig.loopback`),
the real daemon started as systemd starts it (`rig.daemon`), the speaker's way back
into the microphone (`rig.acoustic`), the benchmark (`rig.bench`), the demo
(`rig.demo`) and the words they say (`rig.speech`): what the tests, `scripts/demo`
and `scripts/bench` share. The product (`device`) never imports it.
"""
