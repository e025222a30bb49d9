"""Ready-made tasks: synthetic data, score functions and reference models."""

from hybridopt.tasks.trading import (
    ACTIONS,
    BUY,
    HOLD,
    SELL,
    TradingSignalModel,
    make_trading_data,
    momentum_heuristic,
    synthetic_prices,
    trading_score,
)

__all__ = [
    "ACTIONS",
    "BUY",
    "HOLD",
    "SELL",
    "TradingSignalModel",
    "make_trading_data",
    "momentum_heuristic",
    "synthetic_prices",
    "trading_score",
]
