"""Ray Tune over pretext and fine-tuning settings: search space, pretraining cache (trainer: to come)."""
