"""Label-free model selection: rules that score a trained network without a target label, and
the helpers that judge a rule against the oracle over a grid of settings (notebook 07).

- :func:`source_accuracy`: accuracy on a held-out labelled source split (DomainBed's
  "training-domain validation", Gulrajani & Lopez-Paz 2021, sec. 3);
- :func:`dev`: deep embedded validation (You et al., ICML 2019, Algorithm 1): the source
  validation loss weighted by ``w(x) = p_t(x) / p_s(x)``, with a control variate;
- :func:`prediction_entropy` and :func:`information_maximisation` (Shi & Sha 2012, Hu et al. 2017);
- :func:`reverse_validation`: Ganin et al. (JMLR 2016, sec. 5.1.2), simplified;
- :func:`oracle_target_accuracy`: **reads target labels**: the oracle the rules are judged against.

Each rule returns its natural quantity (:data:`RULES` records its direction); the *scores* of
:func:`label_free_scores` are oriented so that **higher is better for every rule** (DEV and the
entropy negated), as :func:`pick`, :func:`regret` and :func:`rank_correlation` expect. A stored
run's held-out source split is its source *test* split (no method trains on it); its target
sample the unlabelled target *training* images.
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
#: where :func:`dannlib.store.compute` stores :func:`score_trained`'s scores in a run's ``final``
SELECTION_FIELD = "selection"


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _array(name: str, a, ndim: int) -> np.ndarray:
    a = _numpy(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{name} is empty")
    return a.astype(np.float64)


def _labels(name: str, a, n: int) -> np.ndarray:
    a = _array(name, a, 1)
    if not np.all(a == np.round(a)):
        raise ValueError(f"{name} must hold integer class indices")
    if len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries, expected {n}")
    return a.astype(np.int64)


def _log_probs(name: str, logits) -> torch.Tensor:
    return torch.log_softmax(torch.as_tensor(_array(name, logits, 2)), dim=-1)


def _entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of ``log_p (N, n)``; ``0 log 0 = 0``."""
    return -torch.special.xlogy(log_p.exp(), log_p.exp()).sum(-1)


def _features_pair(a, b, names) -> tuple[np.ndarray, np.ndarray]:
    """Two feature samples as float64 ``(N, D)`` (``(N, ...)`` flattened) of one width."""
    a, b = (_array(n, x.reshape(len(x), -1) if x.ndim > 2 else x, 2) for n, x in zip(names, (_numpy(a), _numpy(b))))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature size, got {a.shape[1]} and "
                         f"{b.shape[1]}")
    return a, b


def _logistic(C: float, max_iter: int, x, y, scale_by, method: str, x_out):
    """An L2-regularised (``C``) logistic regression fitted on ``(x, y)`` standardised with the
    statistics of ``scale_by``, on one thread; its ``method`` on ``x_out``."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"C must be a number > 0, got {C!r}")
    mean, std = scale_by.mean(0), scale_by.std(0) + 1e-8
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with threadpool_limits(limits=1):
        clf.fit((x - mean) / std, y)
        return getattr(clf, method)((x_out - mean) / std)


def _accuracy(logits, labels, names) -> float:
    logits = _array(names[0], logits, 2)
    return float(np.mean(logits.argmax(1) == _labels(names[1], labels, len(logits))))


# -- the rules ---------------------------------------------------------------------------------
def source_accuracy(source_logits, source_labels) -> float:
    """Arg-max accuracy of ``source_logits (N, n_classes)`` on held-out ``source_labels (N,)``. Higher is better."""
    return _accuracy(source_logits, source_labels, ("source_logits", "source_labels"))


def per_sample_cross_entropy(logits, labels) -> np.ndarray:
    """``-log softmax(logits)[label]``: ``logits (N, n_classes)``, ``labels (N,)`` -> ``(N,)``."""
    log_p = _log_probs("logits", logits)
    y = _labels("labels", labels, log_p.shape[0])
    return (-log_p[torch.arange(len(y)), torch.as_tensor(y)]).numpy()


def importance_weights(source_features, target_features, *, C: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """Density ratio ``w(x) = p_t(x) / p_s(x)`` at each source sample (You et al. 2019, sec. 4.2):
    a logistic regression on the pooled-standardised features tells source (0) from target (1);
    ``w = exp(logit) * N_s / N_t`` (the factor undoes the prior of unequal sample sizes; the
    logit clipped at +-50, so separable domains give finite weights). ``(N_s, D)``, ``(N_t, D)``
    -> ``(N_s,)``. Fitted on the source samples it weighs (DEV uses the source training split)."""
    fs, ft = _features_pair(source_features, target_features, ("source_features", "target_features"))
    x = np.concatenate([fs, ft])
    logit = _logistic(C, max_iter, x, np.r_[np.zeros(len(fs)), np.ones(len(ft))], x, "decision_function", fs)
    return np.exp(np.clip(logit, -50.0, 50.0)) * len(fs) / len(ft)


def dev_risk(losses, weights) -> float:
    """DEV's risk (You et al. 2019, Algorithm 1): ``L = w * l``, ``eta = -Cov(L, W) / Var(W)``
    (0 when every weight is equal), ``risk = mean(L) + eta * mean(W) - eta``. **Lower is better.**"""
    l, w = _array("losses", losses, 1), _array("weights", weights, 1)
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
    """DEV end to end: :func:`dev_risk` of the source cross-entropies weighted by
    :func:`importance_weights`. **Lower is better.** The target enters through its features only."""
    losses = per_sample_cross_entropy(source_logits, source_labels)
    return dev_risk(losses, importance_weights(source_features, target_features, C=C))


def prediction_entropy(target_logits) -> float:
    """Mean entropy (nats) of ``softmax(target_logits (N, n_classes))``. **Lower is better.**"""
    return float(_entropy(_log_probs("target_logits", target_logits)).mean())


def information_maximisation(target_logits) -> float:
    """``H(mean_i p_i) - mean_i H(p_i)`` (nats), ``p_i = softmax(target_logits[i])``: high when the
    predictions are confident *and* use the classes evenly (a collapse scores 0). Higher is better."""
    log_p = _log_probs("target_logits", target_logits)
    mean_p = log_p.exp().mean(0, keepdim=True)
    return float(_entropy(torch.log(mean_p))[0] - _entropy(log_p).mean())


def reverse_validation(target_features, target_pseudo_labels, source_features, source_labels, *,
                       C: float = 1.0, max_iter: int = 2000) -> float:
    """Reverse validation (Ganin et al. 2016, sec. 5.1.2), simplified: instead of a reverse DANN,
    a multinomial logistic regression on the model's target features (standardised with their
    statistics) and pseudo-labels (the model's arg-max), scored by its accuracy on the held-out
    source ``(N_s, D)``, ``(N_s,)``. Higher is better. One pseudo-label class: a constant classifier."""
    ft, fs = _features_pair(target_features, source_features, ("target_features", "source_features"))
    pseudo = _labels("target_pseudo_labels", target_pseudo_labels, len(ft))
    ys = _labels("source_labels", source_labels, len(fs))
    classes = np.unique(pseudo)
    if len(classes) == 1:
        return float(np.mean(ys == classes[0]))
    return float(np.mean(_logistic(C, max_iter, ft, pseudo, ft, "predict", fs) == ys))


def oracle_target_accuracy(target_logits, target_labels) -> float:
    """**Oracle, not a selection rule: it reads the target test labels.** Arg-max accuracy of
    ``target_logits (N, n_classes)`` against ``target_labels (N,)``."""
    return _accuracy(target_logits, target_labels, ("target_logits", "target_labels"))


# -- judging a rule over a grid ------------------------------------------------------------------
def _finite(scores: Mapping[Hashable, float], name: str) -> dict:
    out = {k: float(v) for k, v in scores.items() if v is not None and math.isfinite(float(v))}
    if not out:
        raise ValueError(f"{name} holds no finite score")
    return out


def pick(scores_by_setting: Mapping[Hashable, float]) -> Hashable:
    """The setting with the highest finite score (ties: the first in the mapping's order)."""
    s = _finite(scores_by_setting, "scores_by_setting")
    return max(s, key=s.get)


def regret(scores_by_setting: Mapping[Hashable, float], oracle_by_setting: Mapping[Hashable, float]) -> float:
    """The oracle's best target accuracy minus that of the rule's :func:`pick`, over the
    settings both mappings score; 0 when the rule picks the best setting."""
    oracle = _finite(oracle_by_setting, "oracle_by_setting")
    return float(max(oracle.values()) - oracle[pick({k: v for k, v in scores_by_setting.items() if k in oracle})])


def rank_correlation(scores_by_setting: Mapping[Hashable, float], oracle_by_setting: Mapping[Hashable, float]) -> float:
    """Spearman's rank correlation of a rule's scores with the oracle over the settings both hold
    finite; nan when fewer than 3 remain or either side is constant."""
    from scipy.stats import spearmanr

    pairs = [(float(scores_by_setting[k]), float(oracle_by_setting[k])) for k in scores_by_setting
             if k in oracle_by_setting]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return float("nan")
    a, b = np.array(pairs).T
    return float("nan") if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)


# -- scoring trained networks ----------------------------------------------------------------------
def label_free_scores(source_logits, source_labels, source_features, target_logits, target_features, *,
                      C: float = 1.0) -> dict[str, float]:
    """Every rule of :data:`RULES` as a score, **higher is better**, from the model's outputs on
    the held-out source (``logits (N_s, n)``, ``labels (N_s,)``, ``features (N_s, D)``) and on
    unlabelled target images (``logits (N_t, n)``, ``features (N_t, D)``). A network with
    non-finite outputs (a diverged run) scores nan under every rule."""
    if not all(np.all(np.isfinite(_numpy(a))) for a in (source_logits, source_features, target_logits,
                                                         target_features)):
        return {rule: float("nan") for rule in RULES}
    pseudo = _array("target_logits", target_logits, 2).argmax(1)
    return {
        "source_accuracy": source_accuracy(source_logits, source_labels),
        "dev": -dev(source_logits, source_labels, source_features, target_features, C=C),
        "entropy": -prediction_entropy(target_logits),
        "info_max": information_maximisation(target_logits),
        "reverse_validation": reverse_validation(target_features, pseudo, source_features, source_labels, C=C),
    }


def scoreable(modules: Mapping[str, torch.nn.Module]) -> bool:
    """Whether ``modules`` hold a DANN-family ``net`` or an ADDA-family ``encoder`` and ``classifier``."""
    return "net" in modules or {"encoder", "classifier"} <= set(modules)


@torch.no_grad()
def network_outputs(modules: Mapping[str, torch.nn.Module], x: torch.Tensor,
                    batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, n_classes), features (N, D))`` of a run's networks on ``x`` in eval mode:
    ``G_y(G_f(x))`` and ``G_f(x)`` of a ``net``, or the classifier on the (target) encoder's output."""
    if not scoreable(modules):
        raise ValueError(f"modules must hold 'net' (DANN family) or 'encoder' and 'classifier' (ADDA family), "
                         f"got {sorted(modules)}")
    if "net" in modules:
        net = modules["net"]
        feat, head, parts = net.features, net.label_predictor, [net]
    else:
        feat, head = modules["encoder"], modules["classifier"]
        parts = [feat, head]
    for m in parts:
        m.eval()
    device = next(parts[0].parameters()).device
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        f = feat(x[i:i + batch_size].to(device))
        logits.append(head(f).float().cpu())
        feats.append(f.float().flatten(1).cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def score_modules(modules, source_val_x, source_val_y, target_x, *, n: int | None = 2000, seed: int = 0,
                  C: float = 1.0) -> dict[str, float]:
    """:func:`label_free_scores` of ``modules`` on at most ``n`` held-out source images
    ``source_val_x (N, C, H, W)`` with labels ``source_val_y (N,)`` and ``n`` unlabelled target
    images ``target_x`` (subsets drawn under ``seed``; None: all)."""
    rng = np.random.default_rng(int(seed))
    i_s, i_t = (np.arange(len(x)) if n is None or n >= len(x) else np.sort(rng.choice(len(x), size=n, replace=False))
                for x in (source_val_x, target_x))
    s_logits, s_feats = network_outputs(modules, source_val_x[i_s])
    t_logits, t_feats = network_outputs(modules, target_x[i_t])
    return label_free_scores(s_logits, _numpy(source_val_y)[i_s], s_feats, t_logits, t_feats, C=C)


def score_trained(modules, eval_sets, target_x, *, n: int | None = 2000, seed: int = 0,
                  C: float = 1.0) -> dict[str, float]:
    """Every rule's score and :data:`ORACLE` for trained ``modules``: the rules
    (:func:`score_modules`) on ``eval_sets["source_test"]`` (held-out source) and the unlabelled
    ``target_x``; the oracle on the whole ``eval_sets["target_test"]`` (**target labels**)."""
    source_val, target_test = eval_sets["source_test"], eval_sets["target_test"]
    scores = score_modules(modules, source_val.x, source_val.y, target_x, n=n, seed=seed, C=C)
    scores[ORACLE] = oracle_target_accuracy(network_outputs(modules, target_test.x)[0], target_test.y)
    return scores


def score_run(stored, *, n: int | None = 2000, seed: int = 0, C: float = 1.0, data_root=None) -> dict[str, float]:
    """:func:`score_trained` of a stored digits run (:class:`dannlib.store.StoredRun`) from its
    saved weights: source test split, unlabelled target training images, target test split."""
    from .store import load_data

    if stored.spec.data.get("kind") != "digits":
        raise ValueError(f"score_run needs a digits run (its data spec holds a source test split); "
                         f"{stored.spec.label} has data kind {stored.spec.data.get('kind')!r}")
    _, target, eval_sets = load_data(stored.spec.data, data_root)
    return score_trained(stored.load_modules(), eval_sets, target.unlabelled().x, n=n, seed=seed, C=C)


def scored_records(runs, *, n: int | None = 2000, seed: int = 0, C: float = 1.0, data_root=None) -> list[dict]:
    """One record per ``(tags, StoredRun)`` of ``runs``: the run's record, every rule's score and
    :data:`ORACLE`, and ``scores_from``: ``"record"`` (``final["selection"]``, kept at training
    under the default ``n``, ``seed``, ``C``), ``"weights"`` (:func:`score_run`) or ``"missing"``
    (no weights kept: no score, no oracle, so :func:`judge_rules` leaves the cell out)."""
    out = []
    for tags, run in runs:
        kept = run.final.get(SELECTION_FIELD)
        if kept is not None and (n, seed, C) == (2000, 0, 1.0):
            scores, source = {k: float(v) for k, v in kept.items()}, "record"
        elif run.weights_path.is_file():
            scores, source = score_run(run, n=n, seed=seed, C=C, data_root=data_root), "weights"
        else:
            scores, source = {}, "missing"
        rec = {k: v for k, v in run.record(**tags).items() if k != SELECTION_FIELD}
        out.append({**rec, **scores, "scores_from": source})
    return out


def judge_rules(records, setting, *, by=("method", "pair"), rules=tuple(RULES), oracle: str = ORACLE) -> list[dict]:
    """Each rule judged against the oracle per group ``by`` and seed, over the grid of cells
    ``setting`` (tag names, e.g. ``("schedule", "lambda_max", "lr")``; a missing tag reads None).
    One row per group, seed and rule: the group's keys, ``seed``, ``rule``, ``pick`` (the chosen
    cell as a dict), ``regret``, ``spearman`` and ``n_settings`` (cells with a finite oracle)."""
    setting = tuple(setting)
    grids: dict[tuple, dict[tuple, dict]] = {}
    for r in records:
        cell, group = tuple(r.get(k) for k in setting), tuple(r.get(k) for k in by)
        grid = grids.setdefault((group, r.get("seed")), {})
        if cell in grid:
            raise ValueError(f"two records of one grid cell {dict(zip(setting, cell))} for {dict(zip(by, group))}, "
                             f"seed {r.get('seed')}: add the tag that tells them apart to setting")
        grid[cell] = r
    rows = []
    for (group, seed), grid in grids.items():
        truth = {cell: r.get(oracle, float("nan")) for cell, r in grid.items()}
        for rule in rules:
            scores = {cell: r.get(rule, float("nan")) for cell, r in grid.items()}
            try:
                chosen = dict(zip(setting, pick({c: v for c, v in scores.items() if c in _finite(truth, "oracle")})))
                loss = regret(scores, truth)
            except ValueError:  # no finite score in this grid
                chosen, loss = None, float("nan")
            rows.append({**dict(zip(by, group)), "seed": seed, "rule": rule, "pick": chosen, "regret": loss,
                         "spearman": rank_correlation(scores, truth),
                         "n_settings": sum(math.isfinite(float(v)) for v in truth.values())})
    return rows
