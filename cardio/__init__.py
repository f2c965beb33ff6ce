"""cardio: an open Python stack for Japan's My Number card."""

__version__ = "0.1.0"
