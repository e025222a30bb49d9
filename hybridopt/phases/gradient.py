"""Policy-gradient score maximiser: REINFORCE with a baseline over sampled action sequences.

Each step samples K action sequences from the model's softmax on one episode, scores them with
``score_fn``, and ascends ``sum_k A_k * log pi(actions_k)`` where ``A_k`` is the (normalised) score
minus a baseline. Per-item rewards with NaN mark unobserved items: their log-probabilities get no
gradient and they do not count in the average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hybridopt.config import GradientConfig
from hybridopt.data import Data, model_input
from hybridopt.scoring import Scorer


@dataclass
class GradientState:
    """What changes during a gradient phase."""

    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    base_lrs: list[float]
    step: int = 0
    running_baseline: float | None = None


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
    """REINFORCE with a baseline, as a phase: ``init() -> state``, ``step(state, data)``."""

    name = "gradient"

    def __init__(
        self,
        model: nn.Module,
        scorer: Scorer,
        config: GradientConfig,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.scorer = scorer
        self.config = config
        self.generator = generator

    def init(self) -> GradientState:
        """A fresh optimiser (and scheduler) over the model's current weights."""
        optimizer = make_optimizer(self.model, self.config)
        scheduler = self.config.scheduler(optimizer) if self.config.scheduler else None
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        return GradientState(optimizer=optimizer, scheduler=scheduler, base_lrs=base_lrs)

    def state_dict(self, state: GradientState) -> dict:
        """The phase state as plain data, for checkpoints."""
        return {
            "optimizer": state.optimizer.state_dict(),
            "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
            "base_lrs": list(state.base_lrs),
            "step": state.step,
            "running_baseline": state.running_baseline,
        }

    def load_state_dict(self, saved: dict) -> GradientState:
        """Rebuild the phase state from :meth:`state_dict` output (model weights loaded first)."""
        state = self.init()
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None and saved["scheduler"] is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        state.base_lrs = list(saved["base_lrs"])
        state.step = saved["step"]
        state.running_baseline = saved["running_baseline"]
        return state

    def step(self, state: GradientState, episode: Data) -> tuple[GradientState, dict]:
        """One policy-gradient step on ``episode``; returns the new state and metrics."""
        cfg = self.config
        self.model.train()
        logits = self.model(model_input(episode))
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
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if cfg.max_grad_norm is not None:
            grad_norm = float(
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            )
        state.optimizer.step()
        if state.scheduler is not None:
            state.scheduler.step()

        mean_score = float(scores.mean())
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
        return state, metrics
