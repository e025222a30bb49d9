"""Checks at the door: run the model once and score_fn on a sample before any long work."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from hybridopt.data import Data, model_input
from hybridopt.scoring import Scorer


def check_model_and_score(
    model: nn.Module,
    scorer: Scorer,
    episode: Data,
    validation_data: Data | None,
    seed: int,
    device: torch.device,
) -> tuple[int, ...]:
    """Run ``model`` on ``episode`` and ``score_fn`` on a sample of actions; fail fast.

    Returns:
        The model's output shape per row, ``(A,)`` or ``(H, A)``.

    Raises:
        TypeError, ValueError: naming what is wrong and what was expected.
        RuntimeError: if ``score_fn`` itself raises.
    """
    x = model_input(episode)
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as err:
        raise ValueError(
            f"model failed on the model input of data (shape {tuple(x.shape)}): {err}"
        ) from err
    if not isinstance(logits, Tensor) or logits.dim() not in (2, 3):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"model must return logits [N, A] or [N, H, A]; got {shape} for input "
            f"{tuple(x.shape)}."
        )
    if logits.shape[0] != x.shape[0] or logits.shape[-1] < 2:
        raise ValueError(
            f"model must return logits [N, A] or [N, H, A] with N = {x.shape[0]} rows and "
            f"A >= 2 actions; got {tuple(logits.shape)}."
        )
    if not logits.is_floating_point():
        raise TypeError(f"model must return floating-point logits; got {logits.dtype}.")
    output_shape = tuple(logits.shape[1:])

    # score_fn on the argmax actions and on uniformly random ones
    checker = torch.Generator().manual_seed(seed)
    probs = torch.full((logits[..., 0].numel(), logits.shape[-1]), 1.0 / logits.shape[-1])
    sample = torch.multinomial(probs, 2, replacement=True, generator=checker)
    actions = torch.stack([logits.argmax(-1).cpu(), sample[:, 0].reshape(logits.shape[:-1])])
    actions = actions.to(device)
    batch = scorer.check(actions, episode)
    if not bool(batch.finite.any()):
        raise ValueError(
            f"score_fn returned {batch.scores.tolist()} on a sample of actions: expected a "
            "finite score for at least one of them (NaN or infinite counts as the worst, so "
            "a score_fn that is never finite cannot be maximised)."
        )
    again = scorer(actions, episode).scores
    if not torch.equal(torch.nan_to_num(again), torch.nan_to_num(batch.scores)):
        warnings.warn(
            f"score_fn is not deterministic: the same actions scored {batch.scores.tolist()}"
            f" and then {again.tolist()}. Noisy scores are allowed, but best-score tracking "
            "and exact reproducibility assume a deterministic score_fn.",
            UserWarning,
            stacklevel=4,
        )
    if validation_data is not None:
        check_validation_data(model, scorer, validation_data, output_shape)
    return output_shape


def check_validation_data(
    model: nn.Module, scorer: Scorer, validation_data: Data, output_shape: tuple[int, ...]
) -> None:
    """The model must read ``validation_data`` as it reads the training data."""
    x = model_input(validation_data, "validation_data")
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as err:
        raise ValueError(
            f"model failed on the model input of validation_data (shape {tuple(x.shape)}); "
            f"expected inputs shaped like data's: {err}"
        ) from err
    if tuple(logits.shape[1:]) != output_shape:
        raise ValueError(
            f"model returned logits {tuple(logits.shape)} on validation_data: expected "
            f"[N, {', '.join(map(str, output_shape))}] as on data."
        )
    scorer(logits.argmax(-1).unsqueeze(0), validation_data)
