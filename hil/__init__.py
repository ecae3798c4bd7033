"""Hardware in the loop: the installed appliance under real systemd, a real kernel and
the kernel's loopback sound card, in a Debian VM built here (or on a real Pi).

Run through ``scripts/hil``. Only the standard library: it runs with any Python 3.11
on the host, before (and apart from) the project's venv.
"""
