"""Population evaluation speed: vmap vs the naive loop vs auto, against a matmul roofline.

For P in {32, 300, 1024} individuals, an MLP and the seed LSTM model (LSTM -> Linear -> 3), at a
full batch (N=2048 rows per individual) and at short episodes (N=64), it measures evaluations
per second of

- loop: the naive per-individual loop (``vector_to_parameters`` + forward + argmax),
- vmap: hybridopt's vmapped evaluator (population-aware LSTM), chunked,
- auto: hybridopt's default, which times both on the first population and keeps the faster
  (measured after that first call),

and the GFLOP/s each reaches, as a fraction of the ``torch.mm`` roofline (a large square matrix)
measured in the same run; the ``torch.bmm`` roofline on the model's own layer shapes is shown
too. It also measures the share of a generation's time spent in variation and selection at
P=300, D=100k. Run: ``python benchmarks/population_eval.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from hybridopt.config import GeneticConfig
from hybridopt.phases.genetic import GeneticPhase
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import Scorer, batched

FEATURES, WINDOW, HIDDEN = 8, 16, 32


class SeedLSTM(nn.Module):
    """The seed model: LSTM -> last step -> Linear -> tanh -> Linear(3)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, HIDDEN, batch_first=True)
        self.hidden = nn.Linear(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(torch.tanh(self.hidden(out[:, -1])))


def mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(FEATURES * WINDOW, 128), nn.ReLU(), nn.Linear(128, 128),
        nn.ReLU(), nn.Linear(128, 3),
    )


@batched
def score(actions, data):
    return (actions == data["y"]).float().mean(-1)


def flops_per_row(model: nn.Module) -> int:
    """Multiply-adds x 2 of one row's forward: Linear layers and LSTM gates."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        elif isinstance(m, nn.LSTM):
            total += WINDOW * 2 * 4 * m.hidden_size * (m.input_size + m.hidden_size)
    return total


def timeit(fn, min_time=0.5, max_reps=20):
    fn()  # warm-up
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or reps >= max_reps:
            return elapsed / reps


def mm_roofline(n=2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timeit(lambda: a @ b, 1.0) / 1e9


def bmm_roofline(model: nn.Module, rows: int, chunk: int) -> float:
    """GFLOP/s of torch.bmm on the model's own layer shapes, batched over a chunk."""
    shapes = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            shapes.append((m.in_features, m.out_features, 1))
        elif isinstance(m, nn.LSTM):
            shapes.append((m.input_size + m.hidden_size, 4 * m.hidden_size, WINDOW))
    work, seconds = 0.0, 0.0
    for fan_in, fan_out, repeats in shapes:
        a, b = torch.randn(chunk, rows, fan_in), torch.randn(chunk, fan_in, fan_out)
        seconds += repeats * timeit(lambda a=a, b=b: torch.bmm(a, b), 0.2)
        work += repeats * 2 * chunk * rows * fan_in * fan_out
    return work / seconds / 1e9


def naive_loop(model, flat, population, x):
    with torch.no_grad():
        for w in population:
            torch.nn.utils.vector_to_parameters(w, model.parameters())
            model(x).argmax(-1)


def bench_case(name, make_model, p, n, gen, reps_time):
    model = make_model().eval()
    x = torch.randn(n, WINDOW, FEATURES, generator=gen)
    data = {"x": x, "y": torch.randint(0, 3, (n,), generator=gen)}
    flat = FlatParams.from_module(model)
    population = flat.vector(model) + 0.1 * torch.randn(p, flat.dim, generator=gen)
    scorer = Scorer(score)
    vm = PopulationEvaluator(model, scorer, flat, method="vmap")
    auto = PopulationEvaluator(model, scorer, flat, method="auto")
    auto.evaluate(population, data)  # the first call measures and chooses
    loop_model = make_model().eval()
    t_loop = timeit(lambda: naive_loop(loop_model, flat, population, x), reps_time, 3)
    t_vmap = timeit(lambda: vm.evaluate(population, data), reps_time, 3)
    t_auto = timeit(lambda: auto.evaluate(population, data), reps_time, 3)
    gflop = flops_per_row(model) * n * p / 1e9
    return {
        "model": name, "P": p, "N": n, "D": flat.dim, "chunk": vm.chunk_size,
        "loop": p / t_loop, "vmap": p / t_vmap, "auto": p / t_auto,
        "auto_choice": auto.choice["method"],
        "gflops_vmap": gflop / t_vmap, "gflops_loop": gflop / t_loop,
        "gflops_auto": gflop / t_auto,
        "bmm": bmm_roofline(model, n, min(vm.chunk_size, p)),
    }


def variation_share(p=300, d_target=100_000, gen=None):
    """Share of one generation spent in selection + variation at P=300, D~100k (full batch)."""
    hidden = 300
    model = nn.Sequential(nn.Flatten(), nn.Linear(FEATURES * WINDOW, hidden), nn.ReLU(),
                          nn.Linear(hidden, (d_target - hidden * (FEATURES * WINDOW + 1)) //
                                    (hidden + 1)), nn.ReLU(), nn.LazyLinear(3))
    model(torch.zeros(1, WINDOW, FEATURES))
    flat = FlatParams.from_module(model)
    n = 2048
    data = {"x": torch.randn(n, WINDOW, FEATURES, generator=gen),
            "y": torch.randint(0, 3, (n,), generator=gen)}
    ev = PopulationEvaluator(model, Scorer(score), flat, method="auto")
    phase = GeneticPhase(flat, ev.evaluate, GeneticConfig(), p, gen)
    state = phase.init(flat.vector(model))
    state, _ = phase.step(state, data)  # generation 0: evaluation only (and auto's choice)
    vary, evaluate = 0.0, 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        state = phase._vary(state)
        t1 = time.perf_counter()
        todo = (~state.evaluated).nonzero().squeeze(1)
        ev.evaluate(state.population[todo], data)
        state.evaluated[:] = True
        vary += t1 - t0
        evaluate += time.perf_counter() - t1
    return flat.dim, vary / 3, evaluate / 3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="P in {32, 300} only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 gives stable figures on a "
                             "machine other work is loading")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    roof = mm_roofline()
    print(f"torch.mm roofline (2048x2048): {roof:.1f} GFLOP/s\n")
    sizes = (32, 300) if args.quick else (32, 300, 1024)
    header = (f"{'model':<6}{'N':>6}{'P':>6}{'loop ev/s':>11}{'vmap ev/s':>11}{'auto ev/s':>11}"
              f"{'vmap/loop':>10}{'auto/best':>10}{'auto':>6}{'GFLOP/s':>9}{'%mm':>6}"
              f"{'%bmm':>6}")
    print(header)
    print("-" * len(header))
    for name, make in (("mlp", mlp), ("lstm", SeedLSTM)):
        for n in (64, 2048):
            for p in sizes:
                r = bench_case(name, make, p, n, gen, 0.5 if n == 64 else 0.1)
                best = max(r["loop"], r["vmap"])
                print(f"{name:<6}{n:>6}{p:>6}{r['loop']:>11.0f}{r['vmap']:>11.0f}"
                      f"{r['auto']:>11.0f}{r['vmap'] / r['loop']:>9.1f}x"
                      f"{r['auto'] / best:>9.2f}x{r['auto_choice']:>6}"
                      f"{r['gflops_auto']:>9.1f}{100 * r['gflops_auto'] / roof:>5.0f}%"
                      f"{100 * r['gflops_auto'] / r['bmm']:>5.0f}%", flush=True)
    d, vary, evaluate = variation_share(gen=gen)
    print(f"\nP=300, D={d}, N=2048: selection + variation {vary * 1000:.0f} ms, evaluation "
          f"{evaluate * 1000:.0f} ms per generation -> {100 * vary / (vary + evaluate):.1f}% "
          "of the generation")


if __name__ == "__main__":
    main()
