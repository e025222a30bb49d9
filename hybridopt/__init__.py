"""hybridopt: train PyTorch models to maximise a score they cannot differentiate.

A controller alternates a policy-gradient score maximiser (REINFORCE with a baseline) and a
genetic algorithm over flat weight vectors (DEAP, evaluated in vectorised batches), switching
phase when progress stalls.
"""

from hybridopt.callbacks import Callback
from hybridopt.config import GeneticConfig, GradientConfig, StallConfig
from hybridopt.optimizer import FitResult, HybridOptimizer
from hybridopt.scoring import batched

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "FitResult",
    "GeneticConfig",
    "GradientConfig",
    "HybridOptimizer",
    "StallConfig",
    "batched",
    "__version__",
]
