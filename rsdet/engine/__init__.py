"""Training loop, checkpoints, schedules, loggers and inference over trained runs."""
