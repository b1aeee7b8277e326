"""Label-free model selection: rules that score a trained network without a target label,
and the helpers that judge a rule against the oracle over a grid of settings.

Every rule takes plain arrays (numpy or torch) so it can be checked by hand:

- :func:`source_accuracy`: accuracy on a held-out labelled source split (the "training-domain
  validation" rule of DomainBed, Gulrajani & Lopez-Paz 2021, sec. 3);
- :func:`dev_risk`: deep embedded validation, DEV (You et al., ICML 2019, "Towards Accurate
  Model Selection in Deep Unsupervised Domain Adaptation", Algorithm 1): the source
  validation loss importance-weighted by ``w(x) = p_t(x) / p_s(x)``
  (:func:`importance_weights`, from a domain classifier on features) with a control variate;
- :func:`prediction_entropy` (mean entropy of the target predictions) and
  :func:`information_maximisation` (entropy of the mean target prediction minus the mean
  entropy, the mutual information between input and prediction; Shi & Sha, ICML 2012, and
  Hu et al., ICML 2017);
- :func:`reverse_validation`: Ganin et al. (JMLR 2016, sec. 5.1.2), simplified: a reverse
  classifier is trained on the target, pseudo-labelled by the model, and tested on the
  labelled held-out source;
- :func:`oracle_target_accuracy`: target test accuracy. **It reads target labels**: an
  oracle, reported beside the rules, never a rule.

Signs. Each rule returns its natural quantity: DEV's risk and the entropy are *lower is
better*, the others *higher is better*. :data:`RULES` records the direction, and
:func:`label_free_scores` / :func:`score_run` return *scores* oriented so that **higher is
better for every rule** (DEV and the entropy enter negated), which is what :func:`pick`,
:func:`regret` and :func:`rank_correlation` expect. :func:`scored_records` scores the stored
runs of a grid (``dannlib.plan`` 07), :func:`judge_rules` turns them into per-seed regrets and
rank correlations for :func:`dannlib.results.aggregate`.

Held-out source split: a stored run's data spec already holds the source *test* split, which
no method trains on; :func:`score_run` uses it as the labelled source validation set, and the
target *training* images (the unlabelled data the method adapted on) as the target sample.
"""
from __future__ import annotations

import math
from typing import Hashable, Mapping

import numpy as np
import torch

#: rule name -> (higher_is_better of the rule's natural quantity, what it is)
RULES: dict[str, tuple[bool, str]] = {
    "source_accuracy": (True, "accuracy on the held-out source split"),
    "dev": (False, "DEV risk (You et al. 2019): importance-weighted source loss with a control variate"),
    "entropy": (False, "mean entropy of the target predictions (nats)"),
    "info_max": (True, "entropy of the mean target prediction minus the mean entropy (nats)"),
    "reverse_validation": (True, "reverse classifier (target pseudo-labels -> source) accuracy on the source"),
}
#: the oracle's name in every table: target test accuracy, read from target labels
ORACLE = "oracle_target_accuracy"


# -- conversions -----------------------------------------------------------------------------
def _array(name: str, a, ndim: int, dtype=np.float64) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{name} is empty")
    return a.astype(dtype)


def _labels(name: str, a, n: int | None = None) -> np.ndarray:
    a = _array(name, a, 1, dtype=np.float64)
    if not np.all(a == np.round(a)):
        raise ValueError(f"{name} must hold integer class indices")
    if n is not None and len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries, expected {n}")
    return a.astype(np.int64)


def _log_probs(name: str, logits) -> torch.Tensor:
    """``log softmax`` of ``logits (N, n_classes)`` in float64."""
    t = torch.as_tensor(_array(name, logits, 2))
    return torch.log_softmax(t, dim=-1)


def _entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of ``log_p (N, n)``; ``0 log 0 = 0``."""
    return -torch.special.xlogy(log_p.exp(), log_p.exp()).sum(-1)


def _features_pair(a, b, names=("source_features", "target_features")) -> tuple[np.ndarray, np.ndarray]:
    """Two feature samples as float64 ``(N, D)`` (``(N, ...)`` flattened) of one width."""
    a, b = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in (a, b))
    a, b = (_array(n, x.reshape(len(x), -1) if x.ndim > 2 else x, 2) for n, x in zip(names, (a, b)))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature size, got {a.shape[1]} and "
                         f"{b.shape[1]}")
    return a, b


def _standardiser(x: np.ndarray):
    mean, std = x.mean(0), x.std(0) + 1e-8
    return lambda z: (z - mean) / std


# -- the rules ---------------------------------------------------------------------------------
def source_accuracy(source_logits, source_labels) -> float:
    """Accuracy of the arg-max of ``source_logits (N, n_classes)`` against ``source_labels
    (N,)`` on a held-out source split. Higher is better."""
    logits = _array("source_logits", source_logits, 2)
    y = _labels("source_labels", source_labels, len(logits))
    return float(np.mean(logits.argmax(1) == y))


def per_sample_cross_entropy(logits, labels) -> np.ndarray:
    """``-log softmax(logits)[label]`` per sample: ``logits (N, n_classes)``, ``labels (N,)``
    -> ``(N,)`` (the loss DEV weights)."""
    log_p = _log_probs("logits", logits)
    y = _labels("labels", labels, log_p.shape[0])
    return (-log_p[torch.arange(len(y)), torch.as_tensor(y)]).numpy()


def importance_weights(source_features, target_features, *, C: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """Density ratio ``w(x) = p_t(x) / p_s(x)`` at each source sample (You et al. 2019, sec.
    4.2), from a domain classifier: an L2-regularised logistic regression (``C``) on the
    features standardised with the pooled statistics, source labelled 0 and target 1. With
    ``P(d = 1 | x)`` its output, ``w(x) = P(d=1|x) / P(d=0|x) * N_s / N_t`` (the factor undoes
    the class prior of unequal sample sizes); computed as ``exp(logit) * N_s / N_t``.

    ``source_features (N_s, D)``, ``target_features (N_t, D)`` (``(N, ...)`` is flattened) ->
    ``(N_s,)`` weights. The classifier is fitted on the same source samples it weighs (our
    simplification; DEV fits it on the source training split)."""
    from sklearn.linear_model import LogisticRegression

    from .evaluate import _one_thread

    if not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"C must be a number > 0, got {C!r}")
    fs, ft = _features_pair(source_features, target_features)
    x = np.concatenate([fs, ft])
    d = np.r_[np.zeros(len(fs)), np.ones(len(ft))]
    scale = _standardiser(x)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with _one_thread():
        clf.fit(scale(x), d)
        logit = clf.decision_function(scale(fs))
    # a logit clipped at +-50: a perfectly separable pair of samples would otherwise give an
    # infinite weight (the risk is then dominated by the few source samples deepest in the target)
    return np.exp(np.clip(logit, -50.0, 50.0)) * len(fs) / len(ft)


def dev_risk(losses, weights) -> float:
    """DEV's risk estimate (You et al. 2019, Algorithm 1): with per-sample source validation
    losses ``l (N,)`` and density ratios ``w (N,)``, the weighted losses ``L = w * l``, the
    control variate coefficient ``eta = -Cov(L, W) / Var(W)`` (0 when every weight is equal)
    and ``risk = mean(L) + eta * mean(W) - eta`` (``E[W] = 1`` under the source, so the
    variate adds no bias and reduces the variance). **Lower is better.**"""
    l = _array("losses", losses, 1)
    w = _array("weights", weights, 1)
    if len(l) != len(w):
        raise ValueError(f"losses and weights must have the same length, got {len(l)} and {len(w)}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("weights must be finite and >= 0")
    weighted = w * l
    if len(w) < 2 or np.var(w) == 0:
        return float(weighted.mean())
    eta = -np.cov(weighted, w)[0, 1] / np.var(w, ddof=1)
    return float(weighted.mean() + eta * w.mean() - eta)


def dev(source_logits, source_labels, source_features, target_features, *, C: float = 1.0) -> float:
    """DEV end to end: :func:`dev_risk` of the source validation cross-entropies weighted by
    :func:`importance_weights`. **Lower is better.** No target label: the target enters
    through its features only."""
    losses = per_sample_cross_entropy(source_logits, source_labels)
    return dev_risk(losses, importance_weights(source_features, target_features, C=C))


def prediction_entropy(target_logits) -> float:
    """Mean entropy (nats) of ``softmax(target_logits (N, n_classes))``. **Lower is better**
    (confident target predictions)."""
    return float(_entropy(_log_probs("target_logits", target_logits)).mean())


def information_maximisation(target_logits) -> float:
    """``H(mean_i p_i) - mean_i H(p_i)`` (nats) with ``p_i = softmax(target_logits[i])``,
    ``target_logits (N, n_classes)``: high when each prediction is confident *and* the
    classes are used evenly (a collapse onto one class scores 0). Higher is better."""
    log_p = _log_probs("target_logits", target_logits)
    mean_p = log_p.exp().mean(0, keepdim=True)
    return float(_entropy(torch.log(mean_p))[0] - _entropy(log_p).mean())


def reverse_validation(target_features, target_pseudo_labels, source_features, source_labels, *,
                       C: float = 1.0, max_iter: int = 2000) -> float:
    """Reverse validation (Ganin et al. JMLR 2016, sec. 5.1.2), simplified: the paper trains
    a reverse *DANN* from the target, labelled by the model's predictions, to the source, and
    scores the model by that network's source validation accuracy. Here the reverse
    classifier is an L2-regularised (``C``) multinomial logistic regression on the model's
    features (standardised with the target's statistics), which keeps the rule cheap enough
    to score every run of a grid; features are what the adapted model maps both domains to,
    so the reverse classifier transfers to the source when they are aligned.

    ``target_features (N_t, D)``, ``target_pseudo_labels (N_t,)`` (the model's arg-max on the
    target), ``source_features (N_s, D)``, ``source_labels (N_s,)`` (held-out source) -> the
    reverse classifier's source accuracy. Higher is better. Pseudo-labels of a single class
    give a constant reverse classifier."""
    from sklearn.linear_model import LogisticRegression

    from .evaluate import _one_thread

    if not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"C must be a number > 0, got {C!r}")
    ft, fs = _features_pair(target_features, source_features, ("target_features", "source_features"))
    pseudo = _labels("target_pseudo_labels", target_pseudo_labels, len(ft))
    ys = _labels("source_labels", source_labels, len(fs))
    classes = np.unique(pseudo)
    if len(classes) == 1:
        return float(np.mean(ys == classes[0]))
    scale = _standardiser(ft)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with _one_thread():
        clf.fit(scale(ft), pseudo)
        pred = clf.predict(scale(fs))
    return float(np.mean(pred == ys))


def oracle_target_accuracy(target_logits, target_labels) -> float:
    """**Oracle, not a selection rule: it reads the target test labels.** Accuracy of the
    arg-max of ``target_logits (N, n_classes)`` against ``target_labels (N,)``; reported only
    as the oracle that the label-free rules are judged against."""
    logits = _array("target_logits", target_logits, 2)
    y = _labels("target_labels", target_labels, len(logits))
    return float(np.mean(logits.argmax(1) == y))


# -- judging a rule over a grid ------------------------------------------------------------------
def _finite(scores: Mapping[Hashable, float], name: str) -> dict:
    out = {k: float(v) for k, v in scores.items() if v is not None and math.isfinite(float(v))}
    if not out:
        raise ValueError(f"{name} holds no finite score")
    return out


def pick(scores_by_setting: Mapping[Hashable, float]) -> Hashable:
    """The setting with the highest score (higher is better; non-finite scores, e.g. of a
    diverged run, are skipped; ties go to the first in the mapping's order)."""
    s = _finite(scores_by_setting, "scores_by_setting")
    return max(s, key=s.get)


def regret(scores_by_setting: Mapping[Hashable, float], oracle_by_setting: Mapping[Hashable, float]) -> float:
    """The oracle's best target accuracy minus the target accuracy of the rule's pick (:func:`pick`
    on ``scores_by_setting``, higher is better), over the settings both mappings score; 0
    when the rule picks the best setting. ``oracle_by_setting`` holds target test
    accuracies: an oracle, used only to judge the rule."""
    oracle = _finite(oracle_by_setting, "oracle_by_setting")
    scores = {k: v for k, v in scores_by_setting.items() if k in oracle}
    return float(max(oracle.values()) - oracle[pick(scores)])


def rank_correlation(scores_by_setting: Mapping[Hashable, float], oracle_by_setting: Mapping[Hashable, float]) -> float:
    """Spearman's rank correlation (``scipy.stats.spearmanr``) of a rule's scores (higher is
    better) with the oracle's target accuracies over the settings both hold with finite
    values; nan when fewer than 3 settings remain or either side is constant."""
    from scipy.stats import spearmanr

    keys = [k for k in scores_by_setting if k in oracle_by_setting]
    pairs = [(float(scores_by_setting[k]), float(oracle_by_setting[k])) for k in keys]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return float("nan")
    a, b = np.array(pairs).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# -- scoring trained networks ----------------------------------------------------------------------
def label_free_scores(source_logits, source_labels, source_features, target_logits, target_features, *,
                      C: float = 1.0) -> dict[str, float]:
    """Every rule of :data:`RULES` as a score, **higher is better** (DEV's risk and the
    entropy negated). Inputs: the model's outputs on the held-out source split (``logits
    (N_s, n)``, ``labels (N_s,)``, ``features (N_s, D)``) and on unlabelled target images
    (``logits (N_t, n)``, ``features (N_t, D)``). There is no target-label argument. A network
    whose outputs are not finite (a diverged run) scores nan under every rule (:func:`pick`
    skips it)."""
    arrays = (source_logits, source_features, target_logits, target_features)
    if not all(np.all(np.isfinite(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)))
               for a in arrays):
        return {rule: float("nan") for rule in RULES}
    pseudo = _array("target_logits", target_logits, 2).argmax(1)
    return {
        "source_accuracy": source_accuracy(source_logits, source_labels),
        "dev": -dev(source_logits, source_labels, source_features, target_features, C=C),
        "entropy": -prediction_entropy(target_logits),
        "info_max": information_maximisation(target_logits),
        "reverse_validation": reverse_validation(target_features, pseudo, source_features, source_labels, C=C),
    }


@torch.no_grad()
def network_outputs(modules: Mapping[str, torch.nn.Module], x: torch.Tensor,
                    batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, n_classes), features (N, D))`` of a stored run's networks on ``x``, in
    eval mode and batches. DANN-family runs (``{"net": DANNNet}``): ``G_f(x)`` and
    ``G_y(G_f(x))``; ADDA-family runs (``{"encoder", "classifier", ...}``): the (target)
    encoder's output and the classifier on it, as ``predict`` does."""
    if "net" in modules:
        net = modules["net"]
        feat, head, parts = net.features, net.label_predictor, [net]
    elif "encoder" in modules and "classifier" in modules:
        feat, head, parts = modules["encoder"], modules["classifier"], [modules["encoder"], modules["classifier"]]
    else:
        raise ValueError(f"modules must hold 'net' (DANN family) or 'encoder' and 'classifier' (ADDA family), "
                         f"got {sorted(modules)}")
    for m in parts:
        m.eval()
    device = next(parts[0].parameters()).device
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        f = feat(x[i:i + batch_size].to(device))
        logits.append(head(f).float().cpu())
        feats.append(f.float().flatten(1).cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def _subset(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def score_modules(modules, source_val_x, source_val_y, target_x, *, n: int | None = 2000, seed: int = 0,
                  C: float = 1.0) -> dict[str, float]:
    """:func:`label_free_scores` of trained ``modules`` (see :func:`network_outputs`) on at
    most ``n`` held-out source images ``source_val_x (N, C, H, W)`` with labels
    ``source_val_y (N,)`` and at most ``n`` unlabelled target images ``target_x`` (subsets
    drawn under ``seed``; None: all). Higher is better for every score."""
    rng = np.random.default_rng(int(seed))
    i_s = _subset(len(source_val_x), n, rng)
    i_t = _subset(len(target_x), n, rng)
    s_logits, s_feats = network_outputs(modules, source_val_x[i_s])
    t_logits, t_feats = network_outputs(modules, target_x[i_t])
    y = np.asarray(source_val_y)[i_s] if not isinstance(source_val_y, torch.Tensor) else source_val_y[i_s].numpy()
    return label_free_scores(s_logits, y, s_feats, t_logits, t_feats, C=C)


def score_run(stored, *, n: int | None = 2000, seed: int = 0, C: float = 1.0, data_root=None) -> dict[str, float]:
    """Every rule's score (higher is better) for a stored run (:class:`dannlib.store.StoredRun`)
    from its saved weights, plus :data:`ORACLE`.

    Held-out source split: the source *test* split of the run's data spec (no method trains
    on it). Target sample: the run's unlabelled target *training* images (what it adapted
    on). Both are cut to ``n`` images (under ``seed``) for the rules; the oracle, target test
    accuracy (target labels: reported as the oracle only), uses the whole target test split,
    the set of the run's recorded ``target_test_acc``."""
    from .store import load_data

    if stored.spec.data.get("kind") != "digits":
        raise ValueError(f"score_run needs a digits run (its data spec holds a source test split); "
                         f"{stored.spec.label} has data kind {stored.spec.data.get('kind')!r}")
    modules = stored.load_modules()
    _, target, eval_sets = load_data(stored.spec.data, data_root)
    return score_trained(modules, eval_sets, target.unlabelled().x, n=n, seed=seed, C=C)


def scoreable(modules: Mapping[str, torch.nn.Module]) -> bool:
    """Whether :func:`network_outputs` can read ``modules`` (a DANN-family ``net`` or an
    ADDA-family ``encoder`` and ``classifier``)."""
    return "net" in modules or {"encoder", "classifier"} <= set(modules)


def score_trained(modules, eval_sets, target_x, *, n: int | None = 2000, seed: int = 0,
                  C: float = 1.0) -> dict[str, float]:
    """Every rule's score (higher is better) and :data:`ORACLE` for trained ``modules``:
    the rules on at most ``n`` images of ``eval_sets["source_test"]`` (the held-out source
    split, labelled) and of the unlabelled target training images ``target_x (N, C, H, W)``;
    the oracle on the whole ``eval_sets["target_test"]`` (**target labels: the oracle only**).
    :func:`dannlib.store.compute` stores this as a run's ``final["selection"]`` when it
    trains a digits run, and :func:`score_run` computes the same numbers from saved weights."""
    source_val, target_test = eval_sets["source_test"], eval_sets["target_test"]
    scores = score_modules(modules, source_val.x, source_val.y, target_x, n=n, seed=seed, C=C)
    t_logits, _ = network_outputs(modules, target_test.x)
    scores[ORACLE] = oracle_target_accuracy(t_logits, target_test.y)
    return scores


# -- tables for a grid of stored runs --------------------------------------------------------------
#: where :func:`dannlib.store.compute` stores :func:`score_trained`'s scores in a run's ``final``
SELECTION_FIELD = "selection"


def stored_scores(stored, *, n: int | None = 2000, seed: int = 0, C: float = 1.0,
                  data_root=None) -> tuple[dict[str, float] | None, str]:
    """``(scores, source)``: every rule's score and :data:`ORACLE` of a stored run, with where
    they come from: ``"record"`` (``final["selection"]``, computed when the run was trained,
    under these defaults of ``n``, ``seed`` and ``C``), ``"weights"`` (:func:`score_run` on its
    saved weights: a run stored before the field, or other settings), or ``(None,
    "missing")`` when neither is there (its weights are not kept; nothing is retrained)."""
    kept = stored.final.get(SELECTION_FIELD)
    if kept is not None and (n, seed, C) == (2000, 0, 1.0):
        return {k: float(v) for k, v in kept.items()}, "record"
    if stored.weights_path.is_file():
        return score_run(stored, n=n, seed=seed, C=C, data_root=data_root), "weights"
    return None, "missing"


def scored_records(runs, *, n: int | None = 2000, seed: int = 0, C: float = 1.0, data_root=None) -> list[dict]:
    """One flat record per ``(tags, StoredRun)`` of ``runs`` (as :func:`dannlib.plan.fetch`
    returns them): the run's record (:meth:`~dannlib.store.StoredRun.record` with its tags)
    plus every rule's score and :data:`ORACLE` (:func:`stored_scores`) and ``scores_from``
    (``"record"``, ``"weights"`` or ``"missing"``: a missing run has no score and no oracle,
    so :func:`judge_rules` leaves its cell out of the grid)."""
    out = []
    for tags, run in runs:
        scores, source = stored_scores(run, n=n, seed=seed, C=C, data_root=data_root)
        rec = {k: v for k, v in run.record(**tags).items() if k != SELECTION_FIELD}
        out.append({**rec, **(scores or {}), "scores_from": source})
    return out


def judge_rules(records, setting, *, by=("method", "pair"), rules=tuple(RULES), oracle: str = ORACLE) -> list[dict]:
    """Each rule judged against the oracle, per group ``by`` and per seed: the grid of one
    group and seed holds one record per setting (``setting``: the tag names that make a
    grid cell, e.g. ``("schedule", "lambda_max", "lr")``; a name a record lacks reads as
    None), each with the rules' scores (higher is better) and the oracle's target accuracy.

    Returns one row per group, seed and rule: the group's keys, ``seed``, ``rule``, ``pick``
    (the chosen setting as a dict), ``regret`` (:func:`regret`), ``spearman``
    (:func:`rank_correlation`) and ``n_settings`` (the cells with an oracle); summarise over
    seeds with :func:`dannlib.results.aggregate` (``aggregate(rows, "regret", by=(...))``)."""
    setting = tuple(setting)
    grids: dict[tuple, dict[tuple, dict]] = {}
    for r in records:
        cell = tuple(r.get(k) for k in setting)
        grid = grids.setdefault((tuple(r.get(k) for k in by), r.get("seed")), {})
        if cell in grid:
            raise ValueError(f"two records of one grid cell {dict(zip(setting, cell))} for "
                             f"{dict(zip(by, tuple(r.get(k) for k in by)))}, seed {r.get('seed')}: "
                             "add the tag that tells them apart to setting")
        grid[cell] = r
    rows = []
    for (group, seed), grid in grids.items():
        truth = {cell: r.get(oracle, float("nan")) for cell, r in grid.items()}
        for rule in rules:
            scores = {cell: r.get(rule, float("nan")) for cell, r in grid.items()}
            try:
                chosen = pick({c: v for c, v in scores.items() if c in _finite(truth, "the oracle")})
                loss = regret(scores, truth)
            except ValueError:  # no finite score in this grid
                chosen, loss = None, float("nan")
            rows.append({**dict(zip(by, group)), "seed": seed, "rule": rule,
                         "pick": None if chosen is None else dict(zip(setting, chosen)), "regret": loss,
                         "spearman": rank_correlation(scores, truth),
                         "n_settings": sum(math.isfinite(float(v)) for v in truth.values())})
    return rows
