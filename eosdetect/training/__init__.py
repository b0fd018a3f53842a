"""Training and measuring models: training data, training, evaluation, and the bundled models' recipes."""
