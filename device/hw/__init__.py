"""Hardware adapters: button, LEDs, camera."""
