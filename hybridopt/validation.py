"""Checks at the door, before any long work.

:func:`check_options` tries what the configs cannot check alone (the optimiser, the scheduler,
the device, relations with ``population_size``); :func:`check_model_and_score` runs the model
once, ``score_fn`` on a sample of actions and ``aux_loss`` on the model's logits.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from hybridopt.checks import field_error
from hybridopt.config import GeneticConfig, GradientConfig, StallConfig
from hybridopt.data import Data, model_input
from hybridopt.phases import BUILT_IN
from hybridopt.population.evaluate import resolve_device
from hybridopt.population.size import LOW as AUTO_MIN
from hybridopt.scoring import Scorer


def _cause(err: BaseException) -> str:
    """``Type: message`` of an error on one line (torch's messages often span several)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def optimizer_names() -> dict[str, type[torch.optim.Optimizer]]:
    """The ``torch.optim`` optimisers ``GradientConfig.optimizer`` may name, by lower-case name."""
    found = {}
    for name in dir(torch.optim):
        cls = getattr(torch.optim, name)
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
            if cls is not torch.optim.Optimizer:
                found[name.lower()] = cls
    return found


def check_options(
    *,
    gradient: GradientConfig | None,
    genetic: GeneticConfig | None,
    stall: StallConfig | None,
    population_size: int | str,
    device: str | torch.device,
    phases: tuple[str, ...] = tuple(BUILT_IN),
    model: nn.Module | None = None,
) -> torch.device:
    """Checks that need more than one config, or torch: run before any long work.

    Each config checked its own fields when it was built; here come the relations between
    them and the options of :class:`~hybridopt.optimizer.HybridOptimizer`, and what only torch
    can tell: the optimiser is built on scratch parameters and stepped once after a fake
    gradient, the scheduler is built on it and stepped once, and the device must exist.

    Args:
        gradient, genetic, stall: the configs (None: the defaults); each checked its own
            fields already, and ``stall`` has no relation with the others yet.
        population_size: P; when it is not an int yet (``"auto"``), the relations with it are
            left to whoever resolves it.
        device: the ``device`` option.
        phases: the phases that will run; the genetic relations apply only when it is one
            (default: every built-in phase).
        model: if given, the scratch parameters mirror the shapes and dtypes of its trainable
            parameters (so an optimiser factory sees the list it will get); else one scratch
            parameter.

    Returns:
        The resolved device.

    Raises:
        TypeError, ValueError: naming ``Config.field`` (or the option) and the bad value.
    """
    gradient = gradient or GradientConfig()
    genetic = genetic or GeneticConfig()
    resolved = resolve_device(device)
    if "genetic" in phases:
        # "auto" resolves to at least AUTO_MIN individuals
        size = population_size if isinstance(population_size, int) else AUTO_MIN
        if not 1 <= genetic.elite < size:
            raise field_error(
                "GeneticConfig", "elite", genetic.elite,
                f"an int with 1 <= elite < population_size = {population_size}"
                f"{f' (at least {AUTO_MIN})' if population_size == 'auto' else ''} (elites are "
                "copied unchanged: with none the best can be lost, with all the population "
                "never changes)",
            )
    params = _scratch_parameters(model, resolved)
    optimizer = _check_optimizer(gradient, params)
    _check_scheduler(gradient, optimizer)
    return resolved


def _scratch_parameters(model: nn.Module | None, device: torch.device) -> list[nn.Parameter]:
    trainable = [] if model is None else [p for p in model.parameters() if p.requires_grad]
    if not trainable or any(nn.parameter.is_lazy(p) for p in trainable):
        # No model, none trainable (reported later, with the model) or shapes not known yet
        return [nn.Parameter(torch.zeros(1, device=device))]
    return [nn.Parameter(torch.zeros(p.shape, dtype=p.dtype, device=device)) for p in trainable]


def _check_optimizer(config: GradientConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Build the configured optimiser on ``params`` and step it once; clear errors if not."""
    name, kwargs = config.optimizer, config.optimizer_kwargs
    if callable(name):
        what = f"GradientConfig.optimizer = {name!r}"
        try:
            optimizer = name(params)
        except Exception as err:
            raise ValueError(
                f"{what} raised {_cause(err)} when called on a list of scratch parameters "
                "(the gradient phase calls it as optimizer(params) with the model's "
                "trainable parameters)."
            ) from err
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{what} must return a torch.optim.Optimizer; it returned "
                f"{type(optimizer).__name__}."
            )
    else:
        known = optimizer_names()
        if name.lower() not in known:
            raise field_error(
                "GradientConfig", "optimizer", name,
                f"a torch.optim optimiser name ({', '.join(sorted(known))}) or a factory "
                "params -> Optimizer",
            )
        cls = known[name.lower()]
        what = (f"GradientConfig.optimizer = {name!r} (torch.optim.{cls.__name__}) with "
                f"optimizer_kwargs = {kwargs!r}")
        accepted = inspect.signature(cls).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            unknown = sorted(set(kwargs) - set(accepted))
            if unknown:
                allowed = [k for k in accepted if k not in ("params", "lr")]
                raise TypeError(
                    f"GradientConfig.optimizer_kwargs has unknown keyword(s) {unknown} for "
                    f"torch.optim.{cls.__name__}; allowed: {', '.join(allowed)}."
                )
        try:
            optimizer = cls(params, lr=config.lr, **kwargs)
        except Exception as err:
            error = TypeError if isinstance(err, TypeError) else ValueError
            raise error(f"{what}: torch.optim.{cls.__name__} refused them: {_cause(err)}") \
                from err
    # One step after a fake gradient: some bad values surface only there (LBFGS, sparse, ...)
    for p in params:
        p.grad = torch.ones_like(p)
    try:
        optimizer.step()
    except Exception as err:
        raise ValueError(
            f"{what}: optimizer.step() failed on scratch parameters with a gradient of ones, "
            f"as the gradient phase calls it (no closure): {_cause(err)}"
        ) from err
    return optimizer


def _check_scheduler(config: GradientConfig, optimizer: torch.optim.Optimizer) -> None:
    """Build the scheduler on the scratch optimiser and step it once, as a gradient step does."""
    if config.scheduler is None:
        return
    what = f"GradientConfig.scheduler = {config.scheduler!r}"
    try:
        scheduler: Any = config.scheduler(optimizer)
    except Exception as err:
        raise ValueError(
            f"{what} raised {_cause(err)} when called on a scratch optimiser (it is called "
            "as scheduler(optimizer))."
        ) from err
    missing = [m for m in ("step", "state_dict") if not callable(getattr(scheduler, m, None))]
    if missing:
        raise TypeError(
            f"{what} must return a learning-rate scheduler with step() and state_dict() "
            f"(e.g. a torch.optim.lr_scheduler.LRScheduler); it returned "
            f"{type(scheduler).__name__} {scheduler!r:.60}, without {' and '.join(missing)}."
        )
    try:
        optimizer.step()  # as in a gradient step: the optimiser first, then the scheduler
        scheduler.step()
        scheduler.state_dict()
    except Exception as err:
        raise ValueError(
            f"{what}: its scheduler failed on step() or state_dict(), which the gradient "
            f"phase calls with no arguments: {_cause(err)}"
        ) from err


def check_model_and_score(
    model: nn.Module,
    scorer: Scorer,
    episode: Data,
    validation_data: Data | None,
    seed: int,
    device: torch.device,
    gradient: GradientConfig | None = None,
) -> tuple[int, ...]:
    """Run ``model`` on ``episode`` and ``score_fn`` on a sample of actions; fail fast.

    Per-item rewards must observe at least one item of the sample, and ``gradient.aux_loss``
    (if any) must give a finite 0-d floating tensor on the model's logits for ``episode``.

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
    if batch.observed is not None and not bool(batch.observed.any()):
        raise ValueError(
            f"score_fn returned per-item rewards shaped like the actions {tuple(actions[0].shape)}"
            " that are NaN (unobserved) for every item of a sample of actions: expected at "
            "least one observed item, else there is nothing to learn from (every sequence "
            "scores 0 and no item gets a gradient)."
        )
    if gradient is not None and gradient.aux_loss is not None:
        check_aux_loss(gradient.aux_loss, logits, episode)
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


def check_aux_loss(aux_loss: Any, logits: Tensor, episode: Data) -> None:
    """``aux_loss(logits, episode)`` must return a finite 0-d floating tensor.

    Raises:
        TypeError: if it returns anything else (a float, a vector, an integer tensor).
        ValueError: if it raises (the cause is chained) or returns NaN or infinity.
    """
    what = f"GradientConfig.aux_loss = {aux_loss!r}"
    try:
        loss = aux_loss(logits, episode)
    except Exception as err:
        raise ValueError(
            f"{what} raised {_cause(err)} on the model's logits {tuple(logits.shape)} for the "
            "first episode (it is called as aux_loss(logits, data))."
        ) from err
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        got = (f"a tensor of shape {tuple(loss.shape)} and dtype {loss.dtype}"
               if isinstance(loss, Tensor) else f"{type(loss).__name__} {loss!r:.60}")
        raise TypeError(
            f"{what} must return a 0-d floating-point tensor (a differentiable loss, e.g. "
            f"hybridopt.losses.masked_cross_entropy); it returned {got}."
        )
    if not bool(torch.isfinite(loss.detach())):
        raise ValueError(
            f"{what} returned {float(loss)} on the model's logits for the first episode: "
            "expected a finite loss (a non-finite one would turn the weights into NaN)."
        )


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
