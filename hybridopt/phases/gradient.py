"""Policy-gradient score maximiser: REINFORCE with a baseline over sampled action sequences.

Each step samples K action sequences from the model's softmax on one episode, scores them with
``score_fn``, and ascends ``sum_k A_k * log pi(actions_k)`` where ``A_k`` is the (normalised) score
minus a baseline. Per-item rewards with NaN mark unobserved items: their log-probabilities get no
gradient and they do not count in the average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hybridopt.config import GradientConfig
from hybridopt.data import Data, model_input
from hybridopt.outputs import to_logits
from hybridopt.phases.base import PhaseContext


@dataclass
class GradientState:
    """What changes during a gradient phase."""

    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    base_lrs: list[float]
    step: int = 0
    running_baseline: float | None = None
    lr_scale: float = 1.0
    best_mean: float = -math.inf
    best_weights: Tensor | None = None
    bad_steps: int = 0


def sample_actions(logits: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """K action sequences ``[K, N(, H)]`` drawn from ``softmax(logits)`` ``[N(, H), A]``."""
    probs = torch.softmax(logits.detach().float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat.cpu(), k, replacement=True, generator=generator)
    return draws.T.reshape(k, *logits.shape[:-1]).to(logits.device)


def baseline_values(scores: Tensor, kind: str, running: float | None) -> Tensor:
    """Baseline per sample: leave-one-out mean, running mean, or zero."""
    if kind == "loo":
        k = scores.numel()
        return (scores.sum() - scores) / (k - 1)
    if kind == "running" and running is not None:
        return torch.full_like(scores, running)
    return torch.zeros_like(scores)


def make_optimizer(model: nn.Module, config: GradientConfig) -> torch.optim.Optimizer:
    """The configured ``torch.optim`` optimiser over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if callable(config.optimizer):
        return config.optimizer(params)
    names = {name.lower(): name for name in dir(torch.optim)}
    if config.optimizer.lower() not in names:
        raise ValueError(
            f"GradientConfig.optimizer must name a torch.optim optimiser (e.g. 'adam', 'sgd'); "
            f"got {config.optimizer!r}."
        )
    cls = getattr(torch.optim, names[config.optimizer.lower()])
    return cls(params, lr=config.lr, **config.optimizer_kwargs)


def reinforce_loss(
    log_probs_all: Tensor,
    actions: Tensor,
    scores: Tensor,
    observed: Tensor | None,
    config: GradientConfig,
    running_baseline: float | None = None,
) -> Tensor:
    """Surrogate loss whose gradient is the REINFORCE estimate of ``-grad E[score]``.

    Args:
        log_probs_all: ``[N(, H), A]`` log-softmax of the policy on the episode.
        actions: ``[K, N(, H)]`` sampled actions.
        scores: ``[K]`` finite scores of the samples.
        observed: bool mask shaped like ``actions`` (True = outcome observed), or None.
        config: baseline and normalisation settings.
        running_baseline: the running mean of past scores, for ``baseline="running"``.
    """
    k = actions.shape[0]
    # Advantages: score minus baseline, normalised
    baseline = baseline_values(scores, config.baseline, running_baseline)
    advantages = scores - baseline
    if config.normalize_advantages:
        advantages = advantages / (advantages.std() + 1e-8)
    advantages = advantages.to(log_probs_all.device, log_probs_all.dtype)

    # Log-probability of each sequence, averaged over its observed items
    log_probs = log_probs_all.unsqueeze(0).expand(k, *log_probs_all.shape)
    log_probs = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1).reshape(k, -1)
    if observed is None:
        per_seq = log_probs.mean(1)
    else:
        observed = observed.reshape(k, -1)
        per_seq = torch.where(observed, log_probs, 0.0).sum(1) / observed.sum(1).clamp(min=1)
    return -(advantages * per_seq).mean()


class GradientPhase:
    """REINFORCE with a baseline as a phase; trains the model in place.

    A collapse guard keeps a visit from degrading what it found (as ESGD's back-off): when the
    policy's entropy falls below ``collapse_entropy``, or the mean sampled score stays more than
    ``collapse_drop`` (relative) below the visit's best for ``collapse_patience`` steps, the
    model goes back to the weights of the visit's best step and the learning rate is multiplied
    by ``revert_lr_factor``; the step's ``event`` says so.
    """

    name = "gradient"
    unit = "step"

    def __init__(self, config: GradientConfig | None = None) -> None:
        self.config = config or GradientConfig()
        self.patience = self.config.patience
        self.max_checks = self.config.max_steps
        self.outputs = "logits"

    def bind(self, context: PhaseContext) -> None:
        """Take the live model, scorer and generator from the optimiser."""
        self.context = context
        self.model, self.scorer = context.model, context.scorer
        self.generator, self.flat = context.generator, context.flat
        self.outputs = context.outputs

    def init(self, start: Tensor, best: Tensor | None = None) -> GradientState:
        """Load ``start`` into the model; a fresh optimiser (and scheduler) over it."""
        self.flat.load(self.model, start)
        return self._fresh(lr_scale=1.0)

    def _fresh(self, lr_scale: float) -> GradientState:
        optimizer = make_optimizer(self.model, self.config)
        for group in optimizer.param_groups:
            group["lr"] *= lr_scale
        scheduler = self.config.scheduler(optimizer) if self.config.scheduler else None
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        return GradientState(optimizer=optimizer, scheduler=scheduler, base_lrs=base_lrs,
                             lr_scale=lr_scale)

    def candidate(self, state: GradientState) -> tuple[Tensor, float | None]:
        """The model's current weights; the optimiser scores them (argmax, training data)."""
        return self.flat.vector(self.model), None

    def cost(self, state: GradientState) -> int:
        """K sampled sequences per step."""
        return self.config.samples

    def handoff(self, state: GradientState) -> Tensor:
        """Where the model is now."""
        return self.flat.vector(self.model)

    def state_dict(self, state: GradientState) -> dict:
        """The phase state as tensors and plain data, for checkpoints (the weights included)."""
        return {
            "weights": self.flat.vector(self.model).detach().cpu(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
            "base_lrs": list(state.base_lrs),
            "step": state.step,
            "running_baseline": state.running_baseline,
            "lr_scale": state.lr_scale,
            "best_mean": state.best_mean,
            "best_weights": None if state.best_weights is None else state.best_weights.cpu(),
            "bad_steps": state.bad_steps,
        }

    def load_state_dict(self, saved: dict) -> GradientState:
        """Rebuild the phase state (and the model's weights) from :meth:`state_dict` output."""
        self.flat.load(self.model, saved["weights"].to(self.context.device))
        state = self._fresh(saved["lr_scale"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None and saved["scheduler"] is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        state.base_lrs = list(saved["base_lrs"])
        state.step = saved["step"]
        state.running_baseline = saved["running_baseline"]
        state.best_mean = saved["best_mean"]
        best = saved["best_weights"]
        state.best_weights = None if best is None else best.to(self.context.device)
        state.bad_steps = saved["bad_steps"]
        return state

    def step(self, state: GradientState, episode: Data) -> tuple[GradientState, dict]:
        """One policy-gradient step on ``episode``; returns the new state and metrics."""
        cfg = self.config
        self.model.train()
        logits = to_logits(self.model(model_input(episode)), self.outputs)
        log_probs_all = torch.log_softmax(logits, dim=-1)

        # Sample K action sequences and score them
        actions = sample_actions(logits, cfg.samples, self.generator)
        batch = self.scorer(actions.cpu(), episode)
        scores = batch.scores.clone()
        if batch.n_nonfinite:
            # Non-finite scores count as the worst of the batch (0 if none is finite)
            worst = scores[batch.finite].min() if batch.finite.any() else scores.new_tensor(0.0)
            scores = torch.where(batch.finite, scores, worst)

        # Policy loss: advantage-weighted log-probabilities of the observed items
        observed = None if batch.observed is None else batch.observed.to(logits.device)
        policy_loss = reinforce_loss(
            log_probs_all, actions, scores, observed, cfg, state.running_baseline
        )

        # Entropy bonus
        entropy = -(log_probs_all.exp() * log_probs_all).sum(-1).mean()
        loss = policy_loss - cfg.entropy_coef * entropy
        aux = None
        if cfg.aux_loss is not None:
            aux = cfg.aux_loss(logits, episode)
            loss = loss + cfg.aux_weight * aux

        # Linear warm-up of the learning rate at the start of the phase
        if cfg.warmup_steps and state.scheduler is None and state.step <= cfg.warmup_steps:
            factor = (state.step + 1) / (cfg.warmup_steps + 1)
            for group, base in zip(state.optimizer.param_groups, state.base_lrs):
                group["lr"] = base * factor
        mean_score = float(scores.mean())
        event = self._guard(state, mean_score, float(entropy.detach()))
        if event is None:
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = None
        if event is None and cfg.max_grad_norm is not None:
            grad_norm = float(
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            )
        if event is None:
            state.optimizer.step()
            if state.scheduler is not None:
                state.scheduler.step()

        if cfg.baseline == "running":
            m = cfg.baseline_momentum
            prev = state.running_baseline
            state.running_baseline = mean_score if prev is None else m * prev + (1 - m) * mean_score
        state.step += 1
        metrics = {
            "evaluations": cfg.samples,
            "nonfinite": batch.n_nonfinite,
            "losses/policy_loss": float(policy_loss.detach()),
            "losses/entropy": float(entropy.detach()),
            "losses/aux_loss": None if aux is None else float(aux.detach()),
            "sample_score_mean": mean_score,
            "sample_score_max": float(scores.max()),
            "flat": bool(scores.max() == scores.min()),
            "grad_norm": grad_norm,
            "lr": state.optimizer.param_groups[0]["lr"],
        }
        if event is not None:
            metrics["event"] = event
        return state, metrics

    def _guard(self, state: GradientState, mean_score: float, entropy: float) -> str | None:
        """The collapse guard: revert to the visit's best step and lower the learning rate.

        Returns the event's description when it fired (the step is then not taken)."""
        cfg = self.config
        if cfg.collapse_patience is None:
            return None
        if state.best_weights is None or mean_score > state.best_mean:
            state.best_mean, state.bad_steps = mean_score, 0
            state.best_weights = self.flat.vector(self.model).detach().clone()
            return None
        fallen = mean_score < state.best_mean - cfg.collapse_drop * abs(state.best_mean)
        collapsed = entropy < cfg.collapse_entropy
        state.bad_steps = state.bad_steps + 1 if (fallen or collapsed) else 0
        if state.bad_steps < cfg.collapse_patience:
            return None
        why = (f"entropy {entropy:.3g} < {cfg.collapse_entropy:g}" if collapsed else
               f"sampled score {mean_score:.4g} more than {cfg.collapse_drop:g} below the "
               f"visit's best {state.best_mean:.4g}")
        self.flat.load(self.model, state.best_weights)
        scale = state.lr_scale * cfg.revert_lr_factor
        fresh = self._fresh(scale)
        state.optimizer, state.scheduler, state.base_lrs = (
            fresh.optimizer, fresh.scheduler, fresh.base_lrs)
        state.lr_scale, state.bad_steps = scale, 0
        return (f"collapse guard: {why} for {cfg.collapse_patience} steps; reverted to the "
                f"visit's best weights, learning rate x{scale:g}")
