"""Benchmarking Neural Network Training Algorithms (Dahl et al., arXiv 2306.07179): the AlgoPerf benchmark.

The paper's central statement: training algorithms can be compared *fairly* by time-to-target on fixed workloads
under a fixed timing protocol (evaluation off the clock) and tuning ruleset, scored by the area under the
performance profile, and on such a benchmark "non-trivial gaps between methods exist" (its baselines separate).

Claim ``protocol_and_baseline_gaps``, at small scale (research notes §6; ``gradlab.bench``):

1. the score reproduces AlgoPerf's definition: the reference tables of research §6.6 to 5e-5;
2. the four target-setting baselines (AdamW, NAdamW, SGD heavy-ball, SGD Nesterov), externally tuned (scrambled-
   Halton trials per study, median over studies of each study's best time), separate: the gap between the best and
   the worst benchmark score has a 95% bootstrap CI over studies (studies resampled with replacement, the whole
   median/score pipeline recomputed) with low >= 0.1, and the gap exceeds the score difference between AdamW and
   an identical *placebo* copy of AdamW (own Halton points and seeds) in the same bench, i.e. the protocol's own
   noise (CI low of gap - placebo difference > 0);
3. evaluation is off the clock: each baseline's best study-0 trial on each workload is rerun 2 times with the normal
   evaluation and 2 times with one 10x slower (interleaved); steps-to-target never changes and the median
   time-to-target moves by at most one eval period of clock.

Preconditions on timing resolution (an experiment whose clock cannot resolve the checks is *inconclusive*, not
failed): over the original trial and its normal-eval reruns (3 runs of the same trial, same seed), (a) the spread
max - min of time-to-target is <= 0.5 eval period, so check 3 resolves one period; (b) the relative spread
(max - min) / median is <= 0.05: a score is B_s = sum_w max(0, 4 - r_sw) / (3W), so a relative clock error e on a
time and on the fastest time moves it by at most sum_w 2 r_sw e / (3W), <= 0.067 at the worst ratio 4 and about
0.02-0.03 at ratios 1-2, below the 0.1 gap of check 2.

Workloads (quick): ``digits_mlp_wide`` (MLP 64-1024-1024-10) and ``teacher_regression_wide`` (MLP 16-768-768-1),
the issue's two quick workloads widened so that a best trial reaches its target in about a second of one core and
an eval period (10 and 20 steps) is ~0.1 s (the clock's run-to-run noise was expected to be tens of ms; on the
shared 2-core machine the first quick run measured 14-25% between runs of one trial, which the preconditions
catch); their targets were set by
``gradlab.bench.targets.set_targets`` (AlgoPerf's procedure, scaled: 4 baselines x 5 Halton trials, the best
configuration rerun 3x, median best validation). The 64-128-10 ``digits_mlp`` reached its target in 15-90 ms with
a ~4 ms eval period, so reruns of one trial spread by up to 9 eval periods (see the revision). Each trial now costs
~1-3 s instead of ~0.05 s, so to stay near the 3 min quick budget on one thread the quick bench runs 3 trials x 3
studies (the issue's 5 x 2 gives a bootstrap over 2 studies, which has 3 distinct resamples) and the slow-eval
reruns cover the 4 baselines (not the placebo) with 2 + 2 reruns. Smoke uses the small workloads (plumbing only;
its timing preconditions are expected to fail).

Times are seconds of single-thread submission time measured as the process's CPU time (``clock="process"``):
AlgoPerf measures wall time on a machine the trial has to itself, and this machine is shared, so wall time would
measure the other jobs. The slow eval of (3) is a busy loop, so it would show on this clock if it leaked into it.
The verdict is decided on time; the same statistics by steps-to-target are reported.
"""

from __future__ import annotations

import math
import time

import numpy as np
from matplotlib.figure import Figure

from gradlab.bench.runner import run_bench
from gradlab.bench.scoring import benchmark_scores, performance_profile, tau_grid
from gradlab.bench.submission import BASELINES, builtin_submissions
from gradlab.bench.timing import run_trial
from gradlab.bench.workloads import BUILTIN_WORKLOADS
from gradlab.claims import Check, ClaimRun, Evidence, Interval, Paper, Revision, claim

PAPER = Paper(
    key="algoperf",
    title="Benchmarking Neural Network Training Algorithms",
    short_title="AlgoPerf benchmark",
    cluster="training",
    arxiv="2306.07179",
    components=("gradlab.bench.scoring", "gradlab.bench.tuning", "gradlab.bench.timing", "gradlab.bench.runner",
                "gradlab.bench.submission", "gradlab.bench.workloads"),
    statement=("Training algorithms are compared by time-to-target on fixed workloads with evaluation off the clock, "
               "a fixed tuning ruleset and the area under the performance profile, and on this benchmark non-trivial "
               "gaps between methods exist."),
    revisions=(
        Revision(
            claim="protocol_and_baseline_gaps",
            date="2026-12-02",
            old=("quick: digits_mlp (64-128-10) and teacher_regression (16-64-64-1), 5 trials x 6 studies; criterion "
                 "(1)-(3) as now, the slow-eval check on all 5 submissions with 3 + 3 reruns; no precondition on the "
                 "clock's resolution"),
            new=("quick: digits_mlp_wide (64-1024-1024-10) and teacher_regression_wide (16-768-768-1) with targets "
                 "from AlgoPerf's target-setting procedure (scaled), 3 trials x 3 studies, slow-eval check on the 4 "
                 "baselines with 2 + 2 reruns; criterion (1)-(3) unchanged; new preconditions: over the 3 runs of "
                 "each rerun trial, time-to-target spread <= 0.5 eval period and relative spread <= 0.05"),
            reason=("The quick workloads reached their targets in 15-90 ms with an eval period of ~4 ms, so reruns of "
                    "the same trial spread by up to 9 eval periods: the time-based checks (2) and (3) measured clock "
                    "noise of our own construction (the issue asks for workloads of 10-60 s, and time to target "
                    "must be >> timing noise). The workloads were made larger and an unresolvable clock now makes the verdict "
                    "inconclusive instead of failed; the thresholds of (2) and (3) are unchanged."),
            old_result=("not reproduced, twice: best - worst gap CI 0.263 [0.129, 0.480] and slow-eval shift 1.69 eval "
                        "periods (first run); gap CI low 0.058 ([0.058, 0.404]) and slow-eval shift 8.34 eval periods "
                        "(second run)"),
        ),
    ),
)

GAP_MIN = 0.1
SCORE_TOL = 5e-5
EVAL_SLOWDOWN = 10.0
EVAL_REPEATS = 2
MAX_SPREAD_PERIODS = 0.5
MAX_REL_SPREAD = 0.05
CLOCK = "process"
REFERENCES = (([[1.0, 2.0], [2.0, 1.0]], [0.83586, 0.83586]),
              ([[1.0, 1.0, math.inf], [1.5, 3.0, 2.0], [5.0, 1.2, 1.0]], [0.66667, 0.61448, 0.64478]))
PLACEBO = "adamw_placebo"


def _scores_from_studies(study: np.ndarray) -> np.ndarray:
    """Scores from ``study[s, w, k]`` (per-study best times): median over studies, then AlgoPerf's score."""
    return benchmark_scores(np.maximum(np.median(study, axis=2), 1e-9))


def _bootstrap(stat, study: np.ndarray, n_resamples: int, seed: int) -> tuple[float, Interval]:
    """Percentile bootstrap over studies of ``stat(study)``; returns the point value and the 95% interval."""
    point = float(stat(study))
    k = study.shape[2]
    rng = np.random.default_rng(seed)
    vals = np.array([stat(study[:, :, rng.integers(0, k, k)]) for _ in range(n_resamples)])
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return point, Interval(point, float(min(lo, point)), float(max(hi, point)), k, 0.95), vals


@claim(paper=PAPER.key, title="AlgoPerf's score reproduces; externally tuned baselines separate by >= 0.1 (beyond an "
       "identical placebo); a 10x slower eval moves no time-to-target by more than one eval period",
       timeouts={"smoke": 120, "quick": 600})
def protocol_and_baseline_gaps(run: ClaimRun) -> Evidence:
    wl_names = run.pick(smoke=("digits_mlp", "teacher_regression"),
                        quick=("digits_mlp_wide", "teacher_regression_wide"),
                        full=("digits_mlp_wide", "teacher_regression_wide", "shapes_cnn"))
    n_trials = run.pick(smoke=2, quick=3, full=5)
    n_studies = run.pick(smoke=2, quick=3, full=6)
    n_boot = run.pick(smoke=200, quick=2000, full=2000)
    workloads = [BUILTIN_WORKLOADS[n]() for n in wl_names]
    subs = builtin_submissions()
    submissions = [subs[n]() for n in BASELINES]
    placebo = subs["adamw"]()
    placebo.name = PLACEBO
    names = [s.name for s in submissions] + [PLACEBO]

    # 1. the score against the reference tables
    ref_err = max(float(np.max(np.abs(benchmark_scores(t) - np.asarray(s)))) for t, s in REFERENCES)

    # 2. the bench (baselines + placebo)
    t0 = time.perf_counter()
    res = run_bench(workloads, submissions + [placebo], ruleset="external", n_trials=n_trials, n_studies=n_studies,
                    seed=run.seed, store=run.scratch / "bench.sqlite", clock=CLOCK,
                    progress=lambda d, n, k: run.progress(0.85 * d / n, k))
    bench_s = time.perf_counter() - t0
    nb = len(BASELINES)
    st_time, st_steps = res.study_times, res.study_steps

    def gap(study):
        s = _scores_from_studies(study[:nb])
        return s.max() - s.min()

    def placebo_diff(study):
        s = _scores_from_studies(study)
        return abs(s[names.index("adamw")] - s[names.index(PLACEBO)])

    gap_t, gap_ci, gap_vals = _bootstrap(gap, st_time, n_boot, run.seed)
    pd_t, pd_ci, pd_vals = _bootstrap(placebo_diff, st_time, n_boot, run.seed)  # same resamples (same rng seed)
    excess_vals = gap_vals - pd_vals
    lo, hi = np.quantile(excess_vals, [0.025, 0.975])
    excess = gap_t - pd_t
    excess_ci = Interval(excess, float(min(lo, excess)), float(max(hi, excess)), n_studies, 0.95)
    gap_s, gap_s_ci, _ = _bootstrap(gap, st_steps, n_boot, run.seed)
    pd_s, pd_s_ci, _ = _bootstrap(placebo_diff, st_steps, n_boot, run.seed)
    scores_time = _scores_from_studies(st_time[:nb])
    scores_steps = _scores_from_studies(st_steps[:nb])
    scores_all = _scores_from_studies(st_time)

    # 3. eval off the clock: each (baseline, workload)'s best study-0 trial again with a 10x slower eval
    best0 = {}
    for spec, r in res.trials:
        if spec.study == 0 and r.reached and spec.submission in BASELINES:
            key = (spec.submission, spec.workload)
            if key not in best0 or r.time_to_target < best0[key][1].time_to_target:
                best0[key] = (spec, r)
    shifts, signed_shifts, normal_spread, rel_spread, period_clock, step_mismatch = [], [], [], [], [], 0
    by_name = {w.name: w for w in workloads}
    sub_by = {s.name: s for s in submissions + [placebo]}
    for j, ((sname, wname), (spec, r)) in enumerate(sorted(best0.items())):
        wl = by_name[wname]
        per_eval = r.eval_s / max(1, len(r.evals))

        def slow_eval(workload, model, _pause=(EVAL_SLOWDOWN - 1.0) * per_eval):
            out = workload.evaluate(model)
            end = time.perf_counter() + _pause
            while time.perf_counter() < end:  # busy: burns CPU, so a leak into the process clock would show
                pass
            return out

        normal, slow = [], []
        for _ in range(EVAL_REPEATS):  # interleaved reruns after warm-up; the medians are compared
            normal.append(run_trial(wl, sub_by[sname], spec.hyperparameters, spec.seed, clock=CLOCK))
            slow.append(run_trial(wl, sub_by[sname], spec.hyperparameters, spec.seed, eval_fn=slow_eval, clock=CLOCK))
        step_mismatch += sum(int(x.steps_to_target != r.steps_to_target) for x in normal + slow)
        t_normal = float(np.median([x.time_to_target for x in normal]))
        t_slow = float(np.median([x.time_to_target for x in slow]))
        one_period = t_normal * wl.eval_period_steps / r.steps_to_target
        period_clock.append(one_period)
        shifts.append(abs(t_slow - t_normal) / one_period if math.isfinite(t_slow) else math.inf)
        signed_shifts.append((t_slow - t_normal) / one_period if math.isfinite(t_slow) else 1e9)
        same = [r.time_to_target] + [x.time_to_target for x in normal]  # 3 runs of one trial: the clock's noise
        spread = float(np.ptp(same)) if all(math.isfinite(x) for x in same) else math.inf
        normal_spread.append(spread / one_period if math.isfinite(spread) else 1e9)
        rel_spread.append(spread / float(np.median(same)) if math.isfinite(spread) else 1e9)
        run.progress(0.85 + 0.15 * (j + 1) / len(best0), f"slow eval {sname} {wname}")
    max_shift_periods = max(shifts) if shifts else math.inf
    max_spread_periods = max(normal_spread) if normal_spread else 1e9
    max_rel_spread = max(rel_spread) if rel_spread else 1e9

    ref_ok = ref_err <= SCORE_TOL
    gap_ok = gap_ci.low >= GAP_MIN
    placebo_ok = excess_ci.low > 0
    eval_ok = max_shift_periods <= 1.0 and step_mismatch == 0
    adamw_i = names.index("adamw")
    reached_by_adamw = bool(np.isfinite(res.times[adamw_i]).all())
    reached_by_any = bool(np.isfinite(res.times[:nb]).any(axis=0).all())

    metrics = {
        "workloads": list(wl_names), "submissions": names, "n_trials": n_trials, "n_studies": n_studies,
        "bootstrap_resamples": n_boot, "bench_wall_s": bench_s, "trials_run": len(res.trials),
        "reference_score_max_abs_err": ref_err,
        "scores_time": dict(zip(names[:nb], scores_time.tolist())),
        "scores_steps": dict(zip(names[:nb], scores_steps.tolist())),
        "scores_time_with_placebo": dict(zip(names, scores_all.tolist())),
        "times_s": {n: dict(zip(wl_names, [t if math.isfinite(t) else "inf" for t in res.times[i].tolist()]))
                    for i, n in enumerate(names)},
        "steps_to_target": {n: dict(zip(wl_names, [t if math.isfinite(t) else "inf" for t in res.steps[i].tolist()]))
                            for i, n in enumerate(names)},
        "gap_time": gap_ci.to_json(), "placebo_diff_time": pd_ci.to_json(), "gap_minus_placebo_time": excess_ci.to_json(),
        "gap_steps": gap_s_ci.to_json(), "placebo_diff_steps": pd_s_ci.to_json(),
        "slow_eval_max_shift_eval_periods": max_shift_periods if math.isfinite(max_shift_periods) else 1e9,
        "slow_eval_steps_mismatches": step_mismatch, "slow_eval_trials": len(best0),
        "slow_eval_signed_shift_eval_periods": dict(zip([f"{a}/{b}" for a, b in sorted(best0)], signed_shifts)),
        "normal_eval_rerun_spread_eval_periods": dict(zip([f"{a}/{b}" for a, b in sorted(best0)], normal_spread)),
        "normal_eval_rerun_relative_spread": dict(zip([f"{a}/{b}" for a, b in sorted(best0)], rel_spread)),
        "max_rerun_spread_eval_periods": max_spread_periods, "max_rerun_relative_spread": max_rel_spread,
        "time_to_target_median_s": float(np.median([r.time_to_target for _, r in best0.values()])) if best0 else 0.0,
        "eval_period_clock_s_median": float(np.median(period_clock)) if period_clock else 0.0,
        "trial_errors": res.errors, "clock": CLOCK,
    }

    # figure: profiles by time and steps (baselines + placebo), bootstrap distributions of gap and placebo diff
    fig = Figure(figsize=(15, 4.4))
    axes = fig.subplots(1, 3)
    taus = tau_grid()
    colors = dict(zip(names, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:gray")))
    for ax, study, what in ((axes[0], st_time, "time"), (axes[1], st_steps, "steps")):
        med = np.maximum(np.median(study, axis=2), 1e-9)
        rho = performance_profile(med, taus)
        sc = benchmark_scores(med)
        for i in np.argsort(-sc, kind="stable"):
            ax.step(taus, rho[i], where="post", lw=2, color=colors[names[i]],
                    ls="--" if names[i] == PLACEBO else "-", label=f"{names[i]} B={sc[i]:.3f}")
        ax.set(xlim=(1, 4), ylim=(-0.03, 1.03), xlabel=rf"$\tau$ = {what} / fastest {what}",
               title=f"performance profile by {what}-to-target")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel(r"$\rho_s(\tau)$: share of workloads within $\tau$")
    ax = axes[2]
    bins = np.linspace(0, 1, 41)
    ax.hist(gap_vals, bins=bins, alpha=0.6, color="tab:purple", label="best - worst baseline score")
    ax.hist(pd_vals, bins=bins, alpha=0.6, color="tab:gray", label="|AdamW - placebo AdamW|")
    ax.axvline(GAP_MIN, color="k", ls=":", label=f"criterion gap CI low >= {GAP_MIN}")
    ax.axvline(gap_ci.low, color="tab:purple", ls="--", lw=1)
    ax.set(xlabel="score difference (by time)", ylabel="bootstrap resamples of studies",
           title=f"gap {gap_t:.3f} [{gap_ci.low:.3f}, {gap_ci.high:.3f}] vs placebo {pd_t:.3f}")
    ax.legend(fontsize=8)
    fig.suptitle(f"AlgoPerf protocol on {', '.join(wl_names)}: external tuning, {n_trials} trials x {n_studies} "
                 f"studies, single-thread CPU, clock = {CLOCK} CPU time", fontsize=10)
    fig.tight_layout()

    return Evidence(
        metrics=metrics,
        criterion=(f"(clock: {CLOCK} CPU time) (1) benchmark_scores matches research §6.6's reference tables to {SCORE_TOL:g}; (2) with the 4 "
                   f"baselines externally tuned ({n_trials} Halton trials x {n_studies} studies), the 95% bootstrap CI "
                   f"over studies of (best - worst benchmark score by time) has low >= {GAP_MIN}, and the CI of "
                   "(that gap - |score(AdamW) - score(placebo AdamW)|) has low > 0; (3) each submission's best "
                   f"study-0 trial, rerun {EVAL_REPEATS}x with the normal and {EVAL_REPEATS}x with a {EVAL_SLOWDOWN:g}x "
                   "slower eval, keeps its steps-to-target, and the median times-to-target differ by <= one eval "
                   "period of clock"),
        passed=bool(ref_ok and gap_ok and placebo_ok and eval_ok),
        preconditions={
            "AdamW reaches every workload's target (median over studies finite)": reached_by_adamw,
            "every workload is reached by some baseline": reached_by_any,
            "no trial raised": not res.errors,
            "timing resolves one eval period (rerun spread of a trial, eval periods)":
                Check("max spread of 3 runs of one trial", max_spread_periods, "<=", MAX_SPREAD_PERIODS),
            "timing resolves the score gap (relative rerun spread of a trial)":
                Check("max (max - min) / median of 3 runs", max_rel_spread, "<=", MAX_REL_SPREAD),
        },
        headline=(Check("best - worst baseline score, CI low", gap_ci.low, ">=", GAP_MIN),
                  Check("gap - placebo difference, CI low", excess_ci.low, ">", 0.0),
                  Check("max time-to-target shift under 10x eval (eval periods)",
                        metrics["slow_eval_max_shift_eval_periods"], "<=", 1.0),
                  Check("reference score max |error|", ref_err, "<=", SCORE_TOL)),
        figures={"performance_profiles": fig},
        notes=("Scores by time: " + ", ".join(f"{n} {s:.3f}" for n, s in zip(names, scores_all))
               + f" (placebo included in the profile). Gap best - worst (baselines only): time {gap_ci}, steps "
               f"{gap_s_ci}; placebo |AdamW - copy|: time {pd_ci}, steps {pd_s_ci}. Steps-to-target mismatches under "
               f"the slow eval: {step_mismatch}/{len(best0)}; max shift {max_shift_periods:.3g} eval periods (signed, "
               f"slow - normal: {', '.join(f'{x:+.2f}' for x in signed_shifts)}; max - min of the original and "
               f"{EVAL_REPEATS} normal reruns: {', '.join(f'{x:.2f}' for x in normal_spread)} eval periods, "
               f"relative {', '.join(f'{x:.3f}' for x in rel_spread)}). Median time-to-target of the rerun trials "
               f"{metrics['time_to_target_median_s']:.3f} s, eval period {metrics['eval_period_clock_s_median']:.3f} s "
               "of single-thread process CPU time; the steps-based scores are deterministic for a seed. By time, "
               "SGD's cheaper steps can outrank Adam-type methods that need fewer steps: compare the two profiles."),
    )
