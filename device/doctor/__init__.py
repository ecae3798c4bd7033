"""`live-appliance doctor`: one check per part of the box, with the fix beside each failure.

Importing the package opens nothing and imports nothing heavy: each check imports
what it needs when it runs, so `doctor mic` does not wait for the Live SDK and
`ctl status` can use the status formatting in `device.doctor.daemon` at once.
"""
