"""Microphone capture, speaker playback, resampling and earcons on PortAudio."""
