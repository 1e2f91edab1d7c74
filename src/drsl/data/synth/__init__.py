"""data.synth package."""
