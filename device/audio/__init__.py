"""Microphone capture (read through ALSA), speaker playback on PortAudio, resampling, earcons."""
