"""Face-verified PIN reset. Not built yet."""
