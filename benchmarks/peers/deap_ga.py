"""A DEAP script as its users write it: ``eaSimple`` over list individuals, one model per call.

Settings, from DEAP's own documentation and examples:

- ``eaSimple``'s loop (``algorithms.varAnd`` then evaluation of the invalid individuals), with
  ``cxpb=0.5``, ``mutpb=0.2`` and ``n=300`` individuals (the OneMax example, ``ga/onemax.py``);
- ``tools.selTournament(tournsize=3)`` (OneMax example);
- ``tools.cxBlend(alpha=0.5)`` and ``tools.mutGaussian(mu=0, sigma, indpb=0.1)`` (the operators
  tutorial uses ``cxBlend(..., 0.5)`` and ``mutGaussian(..., mu=0.0, sigma=0.2, indpb=0.2)``;
  ``indpb`` here is 0.1, within the 0.05 (OneMax) to 0.2 range of the docs; ``sigma`` is set
  to the weights' scale, see ``compare.py``);
- ``creator.Individual`` is a ``list`` of floats; the population is ``x0`` (the model's
  initial weights) and ``n - 1`` copies of it with ``N(0, sigma)`` noise;
- evaluation, one individual at a time: ``vector_to_parameters``, forward, argmax, score.

DEAP draws from Python's global ``random``: it is seeded with the run's seed.
"""

from __future__ import annotations

import operator
import random

import numpy as np
import torch
from deap import algorithms, base, creator, tools

from peers._common import Setup, Tracker, evaluate_one

# DEAP's creator is process-global: its types are created once, here.
if not hasattr(creator, "CompareFitnessMax"):
    creator.create("CompareFitnessMax", base.Fitness, weights=(1.0,))
if not hasattr(creator, "CompareIndividual"):
    creator.create("CompareIndividual", list, fitness=creator.CompareFitnessMax)
if not hasattr(creator, "CompareArrayIndividual"):
    creator.create("CompareArrayIndividual", np.ndarray, fitness=creator.CompareFitnessMax)

SETTINGS = {"population": 300, "cxpb": 0.5, "mutpb": 0.2, "alpha": 0.5, "indpb": 0.1,
            "tournsize": 3}


def make_toolbox(setup: Setup, data, settings=SETTINGS) -> base.Toolbox:
    """The toolbox of the script: evaluation on ``data``, cxBlend, mutGaussian, tournament."""
    model = setup.model

    def evaluate(ind):
        weights = torch.as_tensor(np.asarray(ind), dtype=torch.float32)
        return (evaluate_one(model, weights, data, setup.score_fn),)

    toolbox = base.Toolbox()
    toolbox.register("evaluate", evaluate)
    toolbox.register("mate", tools.cxBlend, alpha=settings["alpha"])
    toolbox.register("mutate", tools.mutGaussian, mu=0.0, sigma=setup.sigma,
                     indpb=settings["indpb"])
    toolbox.register("select", tools.selTournament, tournsize=settings["tournsize"])
    return toolbox


def initial_population(setup: Setup, n: int, individual=None) -> list:
    """``x0`` and ``n - 1`` Gaussian perturbations of it, as DEAP individuals."""
    individual = individual or creator.CompareIndividual
    x0 = setup.x0.double().numpy()
    rng = np.random.default_rng(setup.seed)
    rows = [x0] + [x0 + setup.sigma * rng.standard_normal(x0.size) for _ in range(n - 1)]
    if individual is creator.CompareIndividual:
        return [individual(row.tolist()) for row in rows]
    return [individual(row.copy()) for row in rows]


def ea_simple(population, toolbox, cxpb, mutpb, on_generation, ngen=None, affordable=None):
    """DEAP's ``algorithms.eaSimple`` loop, with a budget check before each evaluation.

    ``on_generation(gen, population, nevals)`` is called after every evaluated generation;
    ``affordable(n)`` says whether ``n`` more evaluations fit (None: always).
    """
    stats = tools.Statistics(lambda ind: ind.fitness.values)
    stats.register("avg", np.mean)
    stats.register("std", np.std)
    stats.register("min", np.min)
    stats.register("max", np.max)
    arrays = isinstance(population[0], np.ndarray)  # DEAP's docs: numpy individuals need this
    halloffame = tools.HallOfFame(1, similar=np.array_equal if arrays else operator.eq)
    logbook = tools.Logbook()

    # Evaluate the individuals with an invalid fitness
    invalid = [ind for ind in population if not ind.fitness.valid]
    for ind, fit in zip(invalid, toolbox.map(toolbox.evaluate, invalid)):
        ind.fitness.values = fit
    halloffame.update(population)
    logbook.record(gen=0, nevals=len(invalid), **stats.compile(population))
    on_generation(0, population, len(invalid))

    gen = 1
    while ngen is None or gen <= ngen:
        # Select the next generation, vary the pool of individuals
        offspring = toolbox.select(population, len(population))
        offspring = algorithms.varAnd(offspring, toolbox, cxpb, mutpb)
        invalid = [ind for ind in offspring if not ind.fitness.valid]
        if affordable is not None and not affordable(len(invalid)):
            break
        for ind, fit in zip(invalid, toolbox.map(toolbox.evaluate, invalid)):
            ind.fitness.values = fit
        halloffame.update(offspring)
        population[:] = offspring
        logbook.record(gen=gen, nevals=len(invalid), **stats.compile(population))
        on_generation(gen, population, len(invalid))
        gen += 1
    return population, logbook


def run(setup: Setup) -> dict:
    """The DEAP script on one task and seed, within the budget."""
    random.seed(setup.seed)
    tracker = Tracker(setup)
    n = setup.population(SETTINGS["population"])
    toolbox = make_toolbox(setup, setup.train)
    population = initial_population(setup, n)

    def on_generation(gen, population, nevals):
        tracker.count(nevals)
        best = tools.selBest(population, 1)[0]
        tracker.offer(torch.tensor(best), best.fitness.values[0])
        tracker.end_generation()

    ea_simple(population, toolbox, SETTINGS["cxpb"], SETTINGS["mutpb"], on_generation,
              affordable=tracker.affordable)
    return tracker.result(population=n, eval_path="per-individual loop",
                          stop_reason="budget")
