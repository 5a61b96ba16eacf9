"""Ray Tune over pretext and fine-tuning settings: the search space (``space``), the pretraining cache trials
share (``cache``), the tuner (``tuner``), its results as records and tables (``results``), and the grid vs
ASHA + Optuna benchmark (``bench``)."""
