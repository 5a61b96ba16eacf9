"""Ray Train loops, checkpoints and resource sizing."""
