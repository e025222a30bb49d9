"""hybridopt: train PyTorch models to maximise a score they cannot differentiate."""
