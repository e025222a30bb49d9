"""Genetic phase: a DEAP population of flat weight vectors with vectorised variation.

DEAP does what it is good at (toolbox, tournament selection, HallOfFame, Logbook); crossover,
mutation and the generation's statistics are array expressions over the whole ``[P, D]``
population, and DEAP members are built only where DEAP needs them (lightweight ones for
selection; the hall of fame's few candidates). Scores are maximised; an individual whose score
is not finite gets the worst fitness, ``-inf``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybridopt.config import GeneticConfig
from hybridopt.data import Data
from hybridopt.phases import _deap, nsga2
from hybridopt.phases.base import PhaseContext
from hybridopt.phases.exchange import Exchange, fresh_counts
from hybridopt.phases.variation import cx_blend, cx_uniform, mut_gaussian, tensor_scales

# -- the phase ------------------------------------------------------------------------------

PER_ROW = ("population", "scores", "evaluated", "uids", "objectives")  # one entry per member


@dataclass
class GeneticState:
    """What changes during a genetic phase."""

    population: Tensor
    scores: Tensor
    evaluated: Tensor
    uids: Tensor
    scale: Tensor
    next_uid: int
    py_random: random.Random
    hall_of_fame: _deap.HallOfFame
    logbook: _deap.Logbook = field(default_factory=_deap.Logbook)
    generation: int = 0
    flat_streak: int = 0
    objectives: Tensor | None = None  # [P, M] with several objectives
    previous: dict | None = None  # NSGA-II: last generation's survivors, rows as above
    injected: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    exchange: dict = field(default_factory=fresh_counts)  # exchange counters of the visit


class GeneticPhase:
    """Genetic algorithm over flat weights: a DEAP population evaluated as one ``[P, D]`` tensor.

    Args:
        config: the phase's settings.
    """

    name = "genetic"
    unit = "generation"
    flat_ends = False  # a flat generation widens the mutations instead

    def __init__(self, config: GeneticConfig | None = None) -> None:
        config = config or GeneticConfig()
        self.config = config
        self.patience = config.patience
        self.max_checks = config.max_generations
        self.population_size = 0
        self.fixed_data = True
        self.toolbox = _deap.Toolbox()
        self.toolbox.register("select", config.select or _deap.tournament(config.tournament_size))
        if config.mate is not None:
            self.toolbox.register("mate", config.mate)
        elif config.crossover == "blend":
            self.toolbox.register(
                "mate", cx_blend, alpha=config.blend_alpha, prob=config.crossover_prob
            )
        else:
            self.toolbox.register("mate", cx_uniform, swap_prob=0.5, prob=config.crossover_prob)
        if config.mutate is not None:
            self.toolbox.register("mutate", config.mutate)
        else:
            self.toolbox.register("mutate", mut_gaussian, prob=config.mutation_prob,
                                  gene_prob=config.gene_mutation_prob)
        self.exchange = Exchange(config)
        self._spare: Tensor | None = None  # the generation before last's [P, D], reused

    def bind(self, context: PhaseContext) -> None:
        """Take the layout, the population evaluator and the generator from the optimiser."""
        self.context = context
        self.flat, self.evaluate = context.flat, context.evaluate
        self.generator, self.population_size = context.generator, context.population_size
        self.fixed_data = context.fixed_data
        self.objectives = context.scorer.n_objectives  # None, or M: NSGA-II survivors
        self.exchange.bind(context)

    def init(self, start: Tensor, best: Tensor | None = None) -> GeneticState:
        """Seed P individuals around ``start`` ``[D]``; ``start`` itself (and ``best``, when it
        differs, and with several objectives up to P/2 members of the Pareto archive) are kept
        unchanged as elites."""
        extra = None if best is None or torch.equal(best, start) else best.unsqueeze(0)
        front = self.context.front() if self.objectives is not None else None
        if front is not None and len(front):
            # NSGA-II starts from the whole Pareto archive, not only around one model
            front = front[: self.population_size // 2].to(start)
            extra = front if extra is None else torch.cat([extra, front])
        return self.seed(start, extra)

    def seed(self, weights: Tensor, extra_elites: Tensor | None = None) -> GeneticState:
        """Seed P individuals around ``weights``, keeping it and ``extra_elites`` ``[E, D]``."""
        p, cfg = self.population_size, self.config
        scale = tensor_scales(self.flat, weights)
        kept = weights.unsqueeze(0)
        if extra_elites is not None:
            kept = torch.cat([kept, extra_elites.to(weights)])[:p]
        noise = torch.randn(
            p - len(kept), self.flat.dim, generator=self.generator, device=weights.device
        )
        # Spreads from init_scale to init_scale_max, log-evenly across the seeded individuals
        spreads = torch.logspace(
            math.log10(cfg.init_scale), math.log10(cfg.init_scale_max), p - len(kept)
        ).to(weights)
        population = torch.cat([kept, weights + spreads[:, None] * scale * noise.to(weights)])
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        self._spare = None
        return GeneticState(
            population=population,
            scores=torch.full((p,), -math.inf, dtype=torch.float64),
            evaluated=torch.zeros(p, dtype=torch.bool),
            uids=torch.arange(p),
            scale=scale,
            next_uid=p,
            py_random=random.Random(seed),
            hall_of_fame=_deap.HallOfFame(cfg.hall_of_fame, similar=_deap.same_member),
            objectives=None if self.objectives is None
            else torch.full((p, self.objectives), -math.inf, dtype=torch.float64),
        )

    def step(self, state: GeneticState, episode: Data) -> tuple[GeneticState, dict]:
        """One generation: variation (after the first), evaluation, statistics.

        With fixed data (the same data every generation) individuals carried over unchanged
        keep their scores; otherwise every individual is evaluated on ``episode``.
        """
        if state.generation > 0:
            state = self._vary(state)
        if not self.fixed_data:
            state.evaluated[:] = False
        exchange = self.exchange.active
        if exchange:  # Lamarckian steps on the kept elites, scored with the generation
            lamarck = self.exchange.lamarckian(state, episode)

        # Evaluation of the new or changed individuals
        todo = (~state.evaluated).nonzero().squeeze(1)
        nonfinite = 0
        if todo.numel():
            rows = state.population if len(todo) == len(state.population) else (
                state.population[todo])
            batch = self.evaluate(rows, episode)
            scores = torch.where(batch.finite, batch.scores, -math.inf)
            state.scores[todo] = scores.to(state.scores.dtype)
            state.evaluated[todo] = True
            nonfinite = batch.n_nonfinite
            if state.objectives is not None:
                objectives = torch.where(batch.finite[:, None], batch.objectives, -math.inf)
                state.objectives[todo] = objectives.to(torch.float64)
        if state.previous is not None:
            state = self._survive(state)
        spent = {"evaluations": 0, "nonfinite": 0}
        if exchange:  # the gradient learner injected in place of the worst individual
            spent = self.exchange.inject(state, episode)
            spent["evaluations"] += lamarck["evaluations"]
            spent["nonfinite"] += lamarck["nonfinite"]
            spent.update(self.exchange.lamarckian_gain(state, lamarck, self.fixed_data))

        # Bookkeeping: hall of fame (members only for rows that can enter it), statistics
        _deap.update_hall_of_fame(state.hall_of_fame, state.scores, state.uids, state.population)
        # Flat fitness: selection is blind, so mutations widen until scores differ again
        finite = state.scores[torch.isfinite(state.scores)]
        flat = finite.numel() == 0 or bool(finite.max() == finite.min())
        state.flat_streak = state.flat_streak + 1 if flat else 0
        record = _deap.population_stats(state.scores)
        state.logbook.record(gen=state.generation, evals=int(todo.numel()), **record)
        best = int(torch.argmax(state.scores))
        state.generation += 1
        metrics = {
            "evaluations": int(todo.numel()) + spent.pop("evaluations"),
            "nonfinite": nonfinite + spent.pop("nonfinite"),
            "best_index": best,
            "generation_best": float(state.scores[best]),
            "population_mean": record["avg"],
            "population_std": record["std"],
            "flat": flat,
        }
        if exchange:
            metrics.update({**self.exchange.metrics(state), **spent})
        return state, metrics

    def state_dict(self, state: GeneticState) -> dict:
        """The phase state as plain data (tensors, numbers, lists), for checkpoints."""
        hof = list(state.hall_of_fame)
        return {
            "population": state.population.cpu(),
            "scores": state.scores,
            "evaluated": state.evaluated,
            "uids": state.uids,
            "scale": state.scale.cpu(),
            "next_uid": state.next_uid,
            "py_random": state.py_random.getstate(),
            "hall_of_fame": {
                "weights": [m.weights.cpu() for m in hof],
                "scores": [m.fitness.values[0] for m in hof],
                "uids": [m.uid for m in hof],
                "indices": [m.index for m in hof],
            },
            "logbook": [dict(r) for r in state.logbook],
            "generation": state.generation,
            "flat_streak": state.flat_streak,
            "objectives": state.objectives,
            "previous": None if state.previous is None
            else {k: v.cpu() for k, v in state.previous.items()},
            "injected": state.injected,
            "exchange": dict(state.exchange),
        }

    def load_state_dict(self, saved: dict) -> GeneticState:
        """Rebuild the phase state from :meth:`state_dict` output."""
        device = self.context.device
        py_random = random.Random()
        py_random.setstate(saved["py_random"])
        hof = _deap.HallOfFame(self.config.hall_of_fame, similar=_deap.same_member)
        saved_hof = saved["hall_of_fame"]
        for w, s, uid, index in zip(
            saved_hof["weights"], saved_hof["scores"], saved_hof["uids"], saved_hof["indices"]
        ):
            member = _deap.make_member(index, uid, s)
            member.weights = w.to(device)
            hof.items.append(member)
        hof.keys = [m.fitness for m in reversed(hof.items)]
        logbook = _deap.Logbook()
        for record in saved["logbook"]:
            logbook.record(**record)
        return GeneticState(
            population=saved["population"].to(device),
            scores=saved["scores"],
            evaluated=saved["evaluated"],
            uids=saved["uids"],
            scale=saved["scale"].to(device),
            next_uid=saved["next_uid"],
            py_random=py_random,
            hall_of_fame=hof,
            logbook=logbook,
            generation=saved["generation"],
            flat_streak=saved["flat_streak"],
            objectives=saved["objectives"],
            previous=None if saved["previous"] is None else {
                k: v.to(device) if k == "population" else v for k, v in saved["previous"].items()
            },
            injected=saved.get("injected", torch.zeros(0, dtype=torch.long)),
            exchange={**fresh_counts(), **saved.get("exchange", {})},
        )

    def best(self, state: GeneticState) -> tuple[Tensor, float]:
        """Weights and score of the current generation's best individual."""
        i = int(torch.argmax(state.scores))
        return state.population[i], float(state.scores[i])

    def candidate(self, state: GeneticState) -> tuple[Tensor, float | None]:
        """The generation's best; its score stands for the training score on fixed data only
        (on random episodes the optimiser re-scores it on the whole training data)."""
        weights, score = self.best(state)
        return weights, score if self.fixed_data else None

    def cost(self, state: GeneticState) -> int:
        """Individuals the next generation evaluates (an upper bound on fixed data, where
        unchanged offspring keep their scores), the exchange's evaluations included."""
        extra = self.exchange.cost(state.generation, self.fixed_data) if self.exchange.active else 0
        if not self.fixed_data:
            return self.population_size + extra
        if state.generation == 0:
            return int((~state.evaluated).sum()) + extra
        elite = 0 if state.objectives is not None else self.config.elite
        return self.population_size - min(elite, self.population_size) + extra

    def handoff(self, state: GeneticState) -> Tensor:
        """The hall of fame's best on fixed data (scores comparable across generations), else
        the last generation's best."""
        if self.fixed_data and len(state.hall_of_fame) and state.objectives is None:
            return state.hall_of_fame[0].weights
        return self.best(state)[0]

    def _survive(self, state: GeneticState) -> GeneticState:
        """NSGA-II: the best P of last generation's survivors and the offspring together."""
        prev, p = state.previous, self.population_size
        rows = {k: torch.cat([prev[k], getattr(state, k).to(prev[k].device)]) for k in prev}
        keep = nsga2.survivors(rows["objectives"], p)
        for k, v in rows.items():
            setattr(state, k, v[keep.to(v.device)])
        state.previous = None
        return state

    def _vary(self, state: GeneticState) -> GeneticState:
        p, cfg = self.population_size, self.config
        n_elite = 0 if state.objectives is not None else min(cfg.elite, p)
        order = torch.argsort(state.scores, descending=True, stable=True)
        elites = order[:n_elite]

        # Selection: NSGA-II's crowded tournament with several objectives, else DEAP's
        # (on the optimiser's own random stream)
        if state.objectives is not None:
            parents = nsga2.parents(state.objectives, p, self.generator)
            state.previous = {k: getattr(state, k).clone() for k in PER_ROW}
        else:
            members = _deap.selection_members(state.scores)
            with _deap.private_random(state.py_random):
                chosen = self.toolbox.select(members, p - n_elite)
            parents = torch.tensor([m.index for m in chosen], dtype=torch.long)
        if len(state.injected):  # the fate of last generation's injected learner
            self.exchange.fates(state, elites, parents)

        # Next population: elites on top, the selected parents' copies below, written in place
        population = state.population
        new = self._buffer(population)
        new[:n_elite] = population[elites.to(population.device)]
        offspring = new[n_elite:]
        torch.index_select(population, 0, parents.to(population.device), out=offspring)
        scale = state.scale * (cfg.mutation_scale * 2.0 ** min(state.flat_streak, 4))
        changed = self._variation(offspring, scale, state.uids[parents])

        # Unchanged offspring keep their parent's identity and score
        unchanged = ~changed
        uids = torch.where(
            unchanged, state.uids[parents], state.next_uid + torch.arange(len(parents))
        )
        kept = elites.cpu()
        carried = torch.where(unchanged, state.scores[parents], -math.inf)
        state.population, self._spare = new, population
        state.scores = torch.cat([state.scores[kept], carried.to(state.scores.dtype)])
        state.evaluated = torch.cat([state.evaluated[kept], unchanged & state.evaluated[parents]])
        state.uids = torch.cat([state.uids[kept], uids])
        if state.objectives is not None:
            state.objectives = torch.where(unchanged[:, None], state.objectives[parents],
                                           -math.inf)
        state.next_uid += len(parents)
        return state

    def _buffer(self, population: Tensor) -> Tensor:
        """Storage for the next generation: the one before last's when it fits (nothing holds
        it: candidates and the hall of fame keep copies), else a new tensor. A new tensor of
        P x D costs a page fault per page, which at D=100k took longer than the variation."""
        spare = self._spare
        if (spare is not None and spare.shape == population.shape
                and spare.dtype == population.dtype and spare.device == population.device
                and spare.data_ptr() != population.data_ptr()):
            return spare
        return torch.empty_like(population)

    def _variation(self, offspring: Tensor, scale: Tensor, uids: Tensor) -> Tensor:
        """Crossover of consecutive pairs, then mutation, in place (operators may also return
        new tensors); returns which offspring rows changed, ``[M]`` bool on the CPU.

        The built-in operators mark what they touch, and a pair of copies of one individual
        (same uid) crosses into itself; your own operators get a fingerprint of each row
        before and after instead (two mat-vecs)."""
        m, half = len(offspring), len(offspring) // 2
        mate, mutate = self.toolbox.mate, self.toolbox.mutate
        marked = (getattr(mate, "func", None) in (cx_blend, cx_uniform)
                  and getattr(mutate, "func", None) is mut_gaussian)
        if marked:
            crossed = torch.zeros(half, dtype=torch.bool, device=offspring.device)
            changed = torch.zeros(m, dtype=torch.bool, device=offspring.device)
            mate_kw, mutate_kw = {"touched": crossed}, {"touched": changed}
        else:
            probe = _probe(self.flat.dim, offspring)
            before, mate_kw, mutate_kw = offspring @ probe, {}, {}
        a, b = offspring[0 : 2 * half : 2], offspring[1 : 2 * half : 2]
        ca, cb = mate(a, b, generator=self.generator, **mate_kw)
        if ca.data_ptr() != a.data_ptr():
            offspring[0 : 2 * half : 2] = ca
        if cb.data_ptr() != b.data_ptr():
            offspring[1 : 2 * half : 2] = cb
        mutated = mutate(offspring, scale, generator=self.generator, **mutate_kw)
        if mutated.data_ptr() != offspring.data_ptr():
            offspring.copy_(mutated)
        if not marked:
            return (offspring @ probe != before).cpu()
        crossed &= (uids[0 : 2 * half : 2] != uids[1 : 2 * half : 2]).to(crossed.device)
        changed[0 : 2 * half : 2] |= crossed
        changed[1 : 2 * half : 2] |= crossed
        return changed.cpu()


def _probe(d: int, like: Tensor) -> Tensor:
    """A fixed vector whose dot product fingerprints a weight vector (no random draw)."""
    return torch.linspace(1.0, 2.0, d, dtype=like.dtype, device=like.device).sin_()
