"""hybridopt: train PyTorch models to maximise a score they cannot differentiate.

A controller alternates search phases, by default a policy-gradient score maximiser (REINFORCE
with a baseline) and a genetic algorithm over flat weight vectors (DEAP, evaluated in vectorised
batches), switching phase when progress stalls. Phases are plug-ins (:mod:`hybridopt.phases`):
"gradient", "genetic", "es" (SNES) or your own.
"""

from hybridopt.callbacks import Callback
from hybridopt.config import ESConfig, GeneticConfig, GradientConfig, StallConfig
from hybridopt.optimizer import HybridOptimizer
from hybridopt.result import FitResult
from hybridopt.scoring import batched

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "ESConfig",
    "FitResult",
    "GeneticConfig",
    "GradientConfig",
    "HybridOptimizer",
    "StallConfig",
    "batched",
    "__version__",
]
