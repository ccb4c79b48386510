"""Attribute unlearning: edit the user table θ* so attributes can no longer be inferred (SPEC section 5).

Every method is a dataclass whose fields are its hyper-parameters (with metadata the UI turns into widgets) and
one verb, `fit_transform(table, labels, model=None, split=None, progress=None) -> UnlearningResult`. Items and
the rest of the model are never touched (the in-training baselines retrain, which is their point).

Defaults that travel between datasets: every loss term is a per-user mean; the parameter-space regulariser is
divided by the table's total variance, so α is dimensionless; MMD bandwidths follow the data (σ0 = mean pairwise
squared distance); Adam step sizes are a fraction of the embeddings' per-coordinate spread.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from typing import ClassVar, Mapping

import numpy as np
import torch

from .data import AttributeLabels, Split
from .device import describe, get_device
from .models import Recommender
from .training import Progress

BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
ADVERSARY_LR_FACTOR = 10.0  # Adv-InT's adversary learning rate relative to the recommender's
TARGET_PROBE_EVERY = 50  # steps between leakage probes in target-driven mode


@dataclass(frozen=True)
class UnlearningResult:
    """An edited user table with what produced it: method, attributes, runtime, device, loss history."""

    method: str
    label: str
    table: torch.Tensor  # CPU float32, same shape as the input
    attributes: tuple[str, ...]
    seconds: float
    device: str
    loss_history: tuple[float, ...]
    params: dict
    model: Recommender | None = None  # set only by in-training baselines (a retrained model)
    notes: str = ""
    details: dict = field(default_factory=dict)  # method-specific facts (LEGO: weights, cache use, phase times)


@dataclass(frozen=True)
class HyperParameter:
    name: str
    kind: type
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


def hp(default, help: str, low=None, high=None, log=False, choices=()):
    """A hyper-parameter field: its default and what the UI needs to build a widget for it."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "log": log, "choices": choices})


# --------------------------------------------------------------------------------------------- shared maths


@dataclass(frozen=True)
class GroupCodes:
    """One attribute's labels on the device: one-hot membership for the labelled users, zeros elsewhere."""

    name: str
    onehot: torch.Tensor  # N × C float
    n_classes: int


def group_codes(labels: Mapping[str, AttributeLabels], n_users: int, device: torch.device) -> list[GroupCodes]:
    out = []
    for name, attribute in labels.items():
        if len(attribute.mask) != n_users:
            raise ValueError(f"attribute {name!r} has labels for {len(attribute.mask)} users, the table has {n_users}")
        onehot = torch.zeros(n_users, attribute.n_classes, device=device)
        rows = torch.as_tensor(np.flatnonzero(attribute.mask), device=device)
        onehot[rows, torch.tensor(attribute.codes, dtype=torch.int64, device=device)] = 1.0
        out.append(GroupCodes(name, onehot, attribute.n_classes))
    return out


def kernel_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of 5 Gaussian kernels, bandwidths σ0·{¼,½,1,2,4}, σ0 = mean pairwise squared distance (no gradient)."""
    squared = (x * x).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * x @ x.T).clamp(min=0)
    with torch.no_grad():
        sigma0 = (2 * squared.mean() - 2 * x.mean(0).pow(2).sum()).clamp(min=1e-12)
    return sum(torch.exp(-distances / (sigma0 * f)) for f in BANDWIDTH_FACTORS)


def group_mmd(kernel: torch.Tensor, onehot: torch.Tensor, null_corrected: bool = False) -> torch.Tensor:
    """Biased MMD² between each group and the pooled rest, from one kernel matrix, averaged over the groups
    weighted by their size (for a binary attribute: the MMD² between the two groups). Size weights keep tiny
    groups (7 homemakers) from dominating. Users with no label (zero rows) are left out.
    The readable reference; the optimisers use `multi_kernel_mmd`, which gives the same value and gradient."""
    labelled = onehot.sum(1) > 0
    onehot = onehot[labelled]
    kernel = kernel[labelled][:, labelled]
    return mmd_from_blocks(onehot.T @ kernel @ onehot, onehot.sum(0), null_corrected)


def mmd_from_blocks(block: torch.Tensor, counts: torch.Tensor, null_corrected: bool = False) -> torch.Tensor:
    """The MMD² of `group_mmd` from the C × C sums of kernel values between groups and the group sizes.

    `null_corrected`: score each group by relu(MMD² − its expectation for a random subset of the same size),
    (1/n_g + 1/n_rest)(k(x,x) − mean k(x,y)). The biased MMD² of two samples from one distribution is that
    positive number, not 0; pushing below it makes the groups more alike than chance, which is the
    over-correction an attacker sees mirrored under cross-validation (SPEC section 4)."""
    present = counts > 0
    block, counts = block[present][:, present], counts[present]
    n = counts.sum()
    total = block.sum()
    row = block.sum(1)
    within = block.diagonal() / counts.pow(2)
    rest_counts = n - counts
    rest = (total - 2 * row + block.diagonal()) / rest_counts.pow(2).clamp(min=1)
    cross = (row - block.diagonal()) / (counts * rest_counts).clamp(min=1)
    mmd = within + rest - 2 * cross
    if null_corrected:
        self_similarity = float(len(BANDWIDTH_FACTORS))  # k(x, x) for the kernel sum
        mean_pair = ((total - n * self_similarity) / (n * (n - 1)).clamp(min=1)).detach()
        expected = (1 / counts + 1 / rest_counts.clamp(min=1)) * (self_similarity - mean_pair)
        mmd = torch.relu(mmd - expected)
    return mmd[0] if len(counts) == 2 else (mmd * counts).sum() / n


class _MultiKernelMMD(torch.autograd.Function):
    """Σ over attributes of `group_mmd(kernel_sum(x), onehot)`, with a hand-written backward.

    Forward: one exp and four squarings (bandwidths σ0·{4,2,1,½,¼} are powers 1, 2, 4, 8, 16 of the widest
    kernel), then the C × C group block sums GᵀKG. The MMD is a function of those sums only, so its gradient in K
    is G A Gᵀ with A its (small) gradient in the sums; backward is then one N × N matmul. About three times
    faster than autograd through `kernel_sum`, which matters on a 2-core CPU."""

    @staticmethod
    def forward(ctx, x, onehots, null_corrected):
        squared = (x * x).sum(1)
        distances = (squared[:, None] + squared[None, :] - 2 * x @ x.T).clamp_(min=0)
        sigma0 = distances.mean().clamp(min=1e-12)  # mean pairwise squared distance, no gradient through it
        power = torch.exp(distances.mul_(-1.0 / (BANDWIDTH_FACTORS[-1] * sigma0)))
        kernel = power.clone()
        slope = power.clone()  # Σ_m m·E^m: d/dD of E^m is −m/(4σ0)·E^m
        for m in (2, 4, 8, 16):
            power = power * power
            kernel.add_(power)
            slope.add_(power, alpha=m)
        value, weights = 0.0, torch.zeros_like(kernel)
        for onehot in onehots:
            with torch.enable_grad():
                block = (onehot.T @ kernel @ onehot).requires_grad_(True)
                mmd = mmd_from_blocks(block, onehot.sum(0), null_corrected)
                (coefficients,) = torch.autograd.grad(mmd, block)
            coefficients = (coefficients + coefficients.T) / 2  # K is symmetric: only the symmetric part counts
            weights += onehot @ coefficients @ onehot.T
            value = value + mmd.detach()
        ctx.save_for_backward(x, slope.mul_(weights).mul_(-1.0 / (BANDWIDTH_FACTORS[-1] * sigma0)))
        return torch.as_tensor(value, dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, grad):
        x, m = ctx.saved_tensors  # m = ∂loss/∂D, symmetric
        return grad * 4 * (m.sum(1, keepdim=True) * x - m @ x), None, None


def represented_mmd(table: torch.Tensor, batch: torch.Tensor, onehots: list[torch.Tensor], null_corrected: bool,
                    model: Recommender | None = None) -> torch.Tensor:
    """`multi_kernel_mmd` of the rows `batch` of the table and, when a model is given, of the same rows of every
    representation derived from the table (LightGCN's propagated embeddings, which serving uses)."""
    mmd = multi_kernel_mmd(table[batch], onehots, null_corrected)
    if model is not None:
        for values in model.derived_representations(table).values():
            mmd = mmd + multi_kernel_mmd(values[batch], onehots, null_corrected)
    return mmd


def uses_derived(model: Recommender | None, representations: str, table: torch.Tensor) -> bool:
    """Whether a method set to `representations` should also match the groups in the model's derived views."""
    return model is not None and representations == "all" and bool(model.derived_representations(table))


def multi_kernel_mmd(x: torch.Tensor, onehots: list[torch.Tensor], null_corrected: bool = False) -> torch.Tensor:
    """Σ over attributes of the group MMD² of the rows `x` (one one-hot matrix per attribute, rows aligned with
    x; a sum, as in SPEC's joint D2D-R, so each attribute is pushed as hard as it would be alone)."""
    return _MultiKernelMMD.apply(x, onehots, null_corrected)


def regulariser(table: torch.Tensor, original: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """‖θ − θ*‖² as a per-user mean, divided by the total variance of θ* (dimensionless)."""
    return (table - original).pow(2).sum(1).mean() / scale


def total_variance(table: torch.Tensor) -> torch.Tensor:
    return (table - table.mean(0)).pow(2).sum(1).mean().clamp(min=1e-12)


def ranking_hinge(model: Recommender, table: torch.Tensor, users: torch.Tensor, top: torch.Tensor,
                  margin: torch.Tensor) -> torch.Tensor:
    """Function-space regulariser: a hinge keeping each user's original top-20 order, mean over users and ranks."""
    scores = model.scorer(table)(users).gather(1, top[users])
    return torch.relu(scores[:, 1:] - scores[:, :-1] + margin).mean()


def table_digest(table: torch.Tensor) -> str:
    return hashlib.sha1(table.detach().cpu().numpy().tobytes()).hexdigest()[:16]


def labels_digest(labels: AttributeLabels) -> str:
    return hashlib.sha1(labels.codes.tobytes() + labels.mask.tobytes()).hexdigest()[:16]


def quick_leakage(table: torch.Tensor, labels: Mapping[str, AttributeLabels], seed: int = 0) -> float:
    """A fast leakage probe for target-driven runs: the batched MLP attacker's AUC − 0.5 under 3-fold CV for
    the attribute furthest from 0.5, signed (negative = over-corrected: the CV mirror of SPEC section 4)."""
    from .attacks import CrossValidation, attack_mlp, auc_score, make_folds

    x = table.detach().cpu().numpy()
    worst = 0.0
    for name, attribute in labels.items():
        folds = make_folds(attribute.codes, CrossValidation(n_splits=3, n_repeats=1), seed, name)
        probabilities = attack_mlp(x[attribute.mask], attribute.codes, folds, attribute.n_classes, seed, steps=100)
        aucs = [auc_score(attribute.codes[test], p, attribute.n_classes) for (_, test), p in zip(folds.pairs, probabilities)]
        gap = float(np.nanmean(aucs)) - 0.5
        worst = gap if abs(gap) > abs(worst) else worst
    return worst


# --------------------------------------------------------------------------------------------- base class


@dataclass(frozen=True)
class AttributeUnlearner:
    """Base: subclasses set the class attributes and implement `_run`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    multi_attribute: ClassVar[bool] = True
    tradeoff_field: ClassVar[str | None] = None

    def fit_transform(self, table: torch.Tensor, labels: Mapping[str, AttributeLabels],
                      model: Recommender | None = None, split: Split | None = None,
                      progress: Progress | None = None) -> UnlearningResult:
        if not labels:
            raise ValueError("choose at least one attribute to unlearn")
        if len(labels) > 1 and not self.multi_attribute:
            raise ValueError(f"{self.label} handles one attribute at a time; got {', '.join(labels)}")
        if self.needs_model and model is None:
            raise ValueError(f"{self.label} needs the recommender (it is not available for uploaded embeddings)")
        device = get_device()
        original = torch.as_tensor(table, dtype=torch.float32).detach().to(device)
        start = time.perf_counter()
        edited, history, extra = self._run(original, labels, model, split, progress, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        return UnlearningResult(self.name, self.label, edited.detach().float().cpu(), tuple(labels), seconds,
                                describe(device), tuple(float(h) for h in history), params, **extra)

    def _run(self, original, labels, model, split, progress, device):
        raise NotImplementedError


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(1.0, fraction), message)


# --------------------------------------------------------------------------------------------- U2U-R


def u2u_pair_term(table: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Mean of ‖θ_i − θ_j‖² over user pairs with different labels, without the N×N Laplacian:
    Σ_pairs = Σ_g (N − n_g) Σ_{i∈g}‖θ_i‖² − Σ_{g≠h} ⟨S_g, S_h⟩ (unordered pairs)."""
    counts = onehot.sum(0)
    n = counts.sum()
    squares = onehot.T @ table.pow(2).sum(1)  # per group Σ‖θ_i‖²
    sums = onehot.T @ table  # S_g
    total = sums.sum(0)
    cross = (sums * (total - sums)).sum()  # Σ_g ⟨S_g, S_tot − S_g⟩ = Σ_{g≠h} ⟨S_g, S_h⟩
    pairs = (counts * (n - counts)).sum() / 2
    return (((n - counts) * squares).sum() - cross) / pairs.clamp(min=1)


@dataclass(frozen=True)
class U2UR(AttributeUnlearner):
    """U2U-R by gradient descent: pull users of different groups together, stay close to θ*."""

    name: ClassVar[str] = "u2u_r"
    label: ClassVar[str] = "U2U-R (gradient)"
    description: ClassVar[str] = ("The paper's user-to-user method: minimise distances between users of different "
                                  "groups. Known failure: groups collapse onto points a non-linear attacker spots.")
    tradeoff_field: ClassVar[str | None] = "alpha"
    alpha: float = hp(0.1, "weight of ‖θ − θ*‖² (per user, relative to the table's variance)", 1e-3, 10.0, True)
    steps: int = hp(300, "optimisation steps", 10, 2000)
    lr: float = hp(0.05, "Adam step as a fraction of the embeddings' per-coordinate spread", 1e-3, 0.5, True)

    def _run(self, original, labels, model, split, progress, device):
        groups = group_codes(labels, len(original), device)
        scale = total_variance(original)
        spread = scale.sqrt() / np.sqrt(original.shape[1])
        table = original.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([table], lr=float(self.lr * spread))
        history = []
        for step in range(self.steps):
            pair = sum(u2u_pair_term(table, g.onehot) for g in groups) / scale
            loss = pair + self.alpha * regulariser(table, original, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
            if step % 50 == 0:
                _report(progress, step / self.steps, f"U2U-R step {step}: loss {history[-1]:.4f}")
        return table, history, {}


def u2u_closed_form(original: torch.Tensor, onehot: torch.Tensor, alpha: float) -> torch.Tensor:
    """Exact minimiser of pair_term/P + (α/N)‖θ − θ*‖² (the same objective as U2UR for one attribute).

    Per user i in group g, stationarity gives θ_i = ((S − S_g)/P + c θ*_i) / a_g with c = α/N and
    a_g = (n − n_g)/P + c; summing over each group gives S = S* and S_g = (c S*_g + n_g S*/P) / (n/P + c).
    O(N·d), no iteration. Unlabelled users keep θ*."""
    labelled = onehot.sum(1) > 0
    n_all = original.shape[0]
    counts = onehot.sum(0)
    n = counts.sum()
    pairs = (counts * (n - counts)).sum() / 2
    c = alpha / n_all
    # the pair term is scaled by the same 1/scale as the regulariser in U2UR, so the ratio (and optimum) match
    start_sums = onehot.T @ original
    start_total = start_sums.sum(0)
    b = n / pairs + c
    sums = (c * start_sums + counts[:, None] * start_total[None, :] / pairs) / b
    group_of = onehot.argmax(1)
    a = (n - counts) / pairs + c
    edited = ((start_total - sums)[group_of] / pairs + c * original) / a[group_of][:, None]
    return torch.where(labelled[:, None], edited, original)


@dataclass(frozen=True)
class U2URClosedForm(AttributeUnlearner):
    """U2U-R solved exactly: the parameter-space optimum in O(N·d), no iterations."""

    name: ClassVar[str] = "u2u_r_closed"
    label: ClassVar[str] = "U2U-R (closed form)"
    description: ClassVar[str] = "The exact optimum of U2U-R with the parameter-space regulariser, in milliseconds."
    multi_attribute: ClassVar[bool] = False
    tradeoff_field: ClassVar[str | None] = "alpha"
    alpha: float = hp(0.1, "weight of ‖θ − θ*‖² (per user, relative to the table's variance)", 1e-3, 10.0, True)

    def _run(self, original, labels, model, split, progress, device):
        (groups,) = group_codes(labels, len(original), device)
        # U2UR minimises pair/(P·scale) + α·mean‖θ−θ*‖²/scale: the scale cancels, the mean is (1/N)·Σ
        return u2u_closed_form(original, groups.onehot, self.alpha), [], {}


# --------------------------------------------------------------------------------------------- D2D-R


@dataclass(frozen=True)
class D2DR(AttributeUnlearner):
    """D2D-R: make the attribute groups' embedding distributions match (multi-kernel MMD), stay close to θ*.

    Several attributes at once sum their MMDs (this is also the 'joint D2D-R' baseline). Mini-batched past
    `batch_users` users; an optional target-driven mode stops once a quick MLP probe is within `target_gap`."""

    name: ClassVar[str] = "d2d_r"
    label: ClassVar[str] = "D2D-R"
    description: ClassVar[str] = ("The paper's distribution-to-distribution method: multi-kernel MMD between "
                                  "attribute groups plus a regulariser.")
    tradeoff_field: ClassVar[str | None] = "alpha"
    alpha: float = hp(4.0, "weight of the regulariser (parameter space: ‖θ − θ*‖² per user / variance)", 1e-3, 100.0, True)
    steps: int = hp(100, "optimisation steps, each a pass over the users (the budget in target-driven mode)", 10, 3000)
    lr: float = hp(0.1, "Adam step as a fraction of the embeddings' per-coordinate spread", 1e-3, 0.5, True)
    regularizer: str = hp("parameter", "'parameter' (‖θ − θ*‖², works without a model) or 'function' (keep each "
                          "user's top-20 order; needs the model)", choices=("parameter", "function"))
    estimator: str = hp("null-corrected", "'null-corrected' (stop pushing once groups are as alike as random subsets; "
                        "avoids over-correction) or 'biased' (the paper's plain MMD²)",
                        choices=("null-corrected", "biased"))
    representations: str = hp("all", "'all': also match the groups in representations derived from the table (LightGCN's "
                              "propagated embeddings, which serving uses; needs the model); 'table': the edited table "
                              "only", choices=("all", "table"))
    batch_users: int = hp(4096, "users per step; above this, random mini-batches keep memory bounded", 256, 20000)
    target_gap: float = hp(0.0, "target-driven mode: every 50 steps a quick MLP probe checks |AUC − 0.5|; stop when "
                           "it is ≤ this, else halve α (still leaking) or double it (over-corrected); 0 = off",
                           0.0, 0.2)
    seed: int = hp(0, "random seed (mini-batches, probe)")

    def _run(self, original, labels, model, split, progress, device):
        groups = group_codes(labels, len(original), device)
        table, history, notes = d2d_optimise(original, original.clone(), groups, self, model, progress, labels)
        return table, history, {"notes": notes} if notes else {}


def d2d_optimise(original: torch.Tensor, start: torch.Tensor, groups: list[GroupCodes], config: D2DR,
                 model: Recommender | None, progress: Progress | None, labels=None, steps: int | None = None,
                 ) -> tuple[torch.Tensor, list[float], str]:
    """The D2D-R optimisation loop shared by D2D-R, joint/sequential D2D-R and LEGO-style refinement."""
    steps = config.steps if steps is None else steps
    function_space = config.regularizer == "function"
    if function_space and model is None:
        raise ValueError("the function-space regulariser needs the model; use regularizer='parameter'")
    scale = total_variance(original)
    spread = scale.sqrt() / np.sqrt(original.shape[1])
    labelled = torch.stack([g.onehot.sum(1) > 0 for g in groups]).any(0).nonzero().squeeze(1)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    mini_batched = len(labelled) > config.batch_users
    table = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([table], lr=float(config.lr * spread))
    top = margin = None
    if function_space:  # each user's original top-20 and its score spread, in chunks of users to bound memory
        with torch.no_grad():
            score = model.scorer(original)
            chunks = [score(users).topk(20, dim=1)
                      for users in torch.arange(len(original), device=original.device).split(config.batch_users)]
            top = torch.cat([c.indices for c in chunks])
            margin = 0.05 * torch.cat([c.values for c in chunks]).std()
    history, notes = [], ""
    null_corrected = config.estimator == "null-corrected"
    derived_model = model if uses_derived(model, config.representations, original) else None
    alpha, target_mode = config.alpha, config.target_gap > 0 and labels is not None
    for step in range(steps):
        # one step is one pass over the labelled users: a single batch up to `batch_users`, else shuffled
        # mini-batches (the kernel is only ever batch × batch, so 100,000 users fit in memory)
        if mini_batched:
            order = labelled[torch.randperm(len(labelled), generator=generator).to(labelled.device)]
            batches = list(order.split(config.batch_users))
        else:
            batches = [labelled]
        pass_loss = 0.0
        for batch in batches:
            mmd = represented_mmd(table, batch, [g.onehot[batch] for g in groups], null_corrected, derived_model)
            if function_space:
                keep = ranking_hinge(model, table, batch, top, margin)
            elif mini_batched:
                keep = regulariser(table[batch], original[batch], scale)
            else:
                keep = regulariser(table, original, scale)
            loss = mmd + alpha * keep
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pass_loss += float(loss.detach()) / len(batches)
        history.append(pass_loss)
        if step % 20 == 0:
            _report(progress, step / steps, f"D2D-R step {step}: loss {history[-1]:.4f}")
        if target_mode and (step + 1) % TARGET_PROBE_EVERY == 0:
            gap = quick_leakage(table, labels, config.seed)
            if abs(gap) <= config.target_gap:
                notes = f"target reached after {step + 1} steps (α = {alpha:.3g}): probe AUC − 0.5 = {gap:+.3f}"
                break
            # still leaking: weaken the regulariser; over-corrected (the CV mirror): strengthen it
            alpha = alpha / 2 if gap > 0 else alpha * 2
    else:
        if target_mode:
            gap = quick_leakage(table, labels, config.seed)
            notes = (f"step budget ({steps}) spent at α = {alpha:.3g}; probe AUC − 0.5 = {gap:+.3f} "
                     f"(target ±{config.target_gap})")
    return table.detach(), history, notes


@dataclass(frozen=True)
class JointD2DR(D2DR):
    """Joint D2D-R: all requested attributes' MMDs summed in one optimisation (the LEGO comparison baseline)."""

    name: ClassVar[str] = "joint_d2d"
    label: ClassVar[str] = "Joint D2D-R"
    description: ClassVar[str] = "All attributes' MMDs in one optimisation, recomputed from scratch per request."


@dataclass(frozen=True)
class SequentialD2DR(D2DR):
    """Sequential D2D-R: one attribute after another, each starting from the previous result."""

    name: ClassVar[str] = "sequential_d2d"
    label: ClassVar[str] = "Sequential D2D-R"
    description: ClassVar[str] = "D2D-R for each attribute in turn; later steps can undo earlier ones."

    def _run(self, original, labels, model, split, progress, device):
        table, history = original.clone(), []
        names = list(labels)
        for i, name in enumerate(names):
            groups = group_codes({name: labels[name]}, len(original), device)
            scaled = (lambda f, m, i=i: _report(progress, (i + f) / len(names), f"{name}: {m}")) if progress else None
            # each step anchors its regulariser on the previous result, as running D2D-R again would
            table, part, _ = d2d_optimise(table, table, groups, self, model, scaled)
            history.extend(part)
        return table, history, {}


# --------------------------------------------------------------------------------------------- linear erasure


def leace_eraser(x: torch.Tensor, indicators: torch.Tensor, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """LEACE (Belrose et al., 2023): x ↦ x − W⁺ P W (x − μ), W = Σ_xx^{-½}, P the projection onto the columns of
    W Σ_xz. Makes every class-conditional mean equal with the least change in the whitened norm.
    Returns (matrix E, mean μ) so that erase(x) = x − (x − μ) @ E.T."""
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / len(x)
    cross = centred.T @ (indicators - indicators.mean(0)) / len(x)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
    keep = eigenvalues > tol * eigenvalues.max()
    inv_sqrt = (eigenvectors[:, keep] / eigenvalues[keep].sqrt()) @ eigenvectors[:, keep].T
    sqrt = (eigenvectors[:, keep] * eigenvalues[keep].sqrt()) @ eigenvectors[:, keep].T
    whitened_cross = inv_sqrt @ cross.double()
    u, s, _ = torch.linalg.svd(whitened_cross, full_matrices=False)
    basis = u[:, s > tol * max(float(s.max()), 1e-30)]
    projection = basis @ basis.T
    return (sqrt @ projection @ inv_sqrt).float(), mean


@dataclass(frozen=True)
class LinearEraser(AttributeUnlearner):
    """LEACE-style linear concept erasure: closed form, several attributes at once (stacked one-hot indicators)."""

    name: ClassVar[str] = "leace"
    label: ClassVar[str] = "Linear eraser (LEACE-style)"
    description: ClassVar[str] = ("Closed-form least-squares concept erasure: equal class means, provably defeats "
                                  "every linear attacker (not non-linear ones). Milliseconds.")

    def _run(self, original, labels, model, split, progress, device):
        groups = group_codes(labels, len(original), device)
        labelled = torch.stack([g.onehot.sum(1) > 0 for g in groups]).all(0)
        indicators = torch.cat([g.onehot for g in groups], dim=1)[labelled]
        eraser, mean = leace_eraser(original[labelled], indicators)
        return original - (original - mean) @ eraser.T, [], {}


# --------------------------------------------------------------------------------------------- LEGO-style

_CALIBRATION_CACHE: dict[tuple, torch.Tensor] = {}  # (table, attribute, settings) -> Δ_a, N × d each
CALIBRATION_CACHE_SIZE = 64


@dataclass(frozen=True)
class LegoStyle(AttributeUnlearner):
    """LEGO-style multi-attribute unlearning (our build of the idea; the paper's code is not public).

    Step 1, calibration: for each attribute independently, an offset Δ_a minimising its MMD + α‖Δ_a‖², all
    attributes optimised together as one batched program, each cached. Step 2, combination: θ_S = θ* + Σ w_a Δ_a
    with weights w ≥ 0 fitted for the requested set, then a few joint refinement steps. A new request (an
    attribute added or dropped) reuses the cached calibrations and refits only step 2."""

    name: ClassVar[str] = "lego"
    label: ClassVar[str] = "LEGO-style"
    description: ClassVar[str] = ("Per-attribute calibrations computed once and cached, combined with fitted weights; "
                                  "adding or dropping an attribute reuses the cache.")
    tradeoff_field: ClassVar[str | None] = "alpha"
    alpha: float = hp(4.0, "regulariser weight, as in D2D-R", 1e-3, 100.0, True)
    estimator: str = hp("null-corrected", "'null-corrected' (stop pushing once groups are as alike as random subsets; "
                        "avoids over-correction) or 'biased' (the paper's plain MMD²)",
                        choices=("null-corrected", "biased"))
    calibration_steps: int = hp(100, "steps of each attribute's calibration (cached)", 10, 3000)
    combination_steps: int = hp(30, "steps fitting the combination weights", 0, 500)
    combination_users: int = hp(512, "users sampled per combination step (a few weights need few users)", 64, 20000)
    refine_steps: int = hp(0, "joint D2D-R refinement steps after combining (0 = pure combination)", 0, 500)
    representations: str = hp("all", "'all': calibrate and combine on the derived representations too (LightGCN's "
                              "propagated embeddings; needs the model), as D2D-R does; 'table': the edited table only",
                              choices=("all", "table"))
    lr: float = hp(0.1, "Adam step as a fraction of the embeddings' per-coordinate spread", 1e-3, 0.5, True)
    batch_users: int = hp(4096, "users per step (mini-batches above this)", 256, 20000)
    seed: int = hp(0, "random seed")

    def _keys(self, original: torch.Tensor, labels: Mapping[str, AttributeLabels],
              model: Recommender | None) -> dict[str, tuple]:
        """Each attribute's cache key: the table, the labels, the settings, and (when calibrating on derived
        representations) those representations, which depend on the model's graph and item table."""
        context = [table_digest(original)]
        if model is not None:
            context += [table_digest(v) for v in model.derived_representations(original).values()]
        settings = (self.alpha, self.estimator, self.calibration_steps, self.lr, self.batch_users, self.seed)
        return {name: (*context, name, labels_digest(attribute), *settings) for name, attribute in labels.items()}

    def calibrate(self, original: torch.Tensor, labels: Mapping[str, AttributeLabels],
                  model: Recommender | None = None, progress=None) -> dict:
        """Δ_a for each attribute, from the cache when available; the missing ones are optimised together."""
        model = model if uses_derived(model, self.representations, original) else None
        return self._calibrated(original, labels, model, progress)[0]

    def _calibrated(self, original: torch.Tensor, labels: Mapping[str, AttributeLabels],
                    model: Recommender | None, progress=None) -> tuple[dict, int]:
        """`calibrate` for a model already checked by `uses_derived`; also says how many came from the cache."""
        keys = self._keys(original, labels, model)
        missing = [name for name in labels if keys[name] not in _CALIBRATION_CACHE]
        if missing:
            groups = group_codes({n: labels[n] for n in missing}, len(original), original.device)
            scale = total_variance(original)
            spread = scale.sqrt() / np.sqrt(original.shape[1])
            offsets = torch.zeros(len(missing), *original.shape, device=original.device, requires_grad=True)
            optimizer = torch.optim.Adam([offsets], lr=float(self.lr * spread))
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            for step in range(self.calibration_steps):
                loss = 0.0
                for a, g in enumerate(groups):  # independent problems, one optimiser over the stacked offsets
                    labelled = (g.onehot.sum(1) > 0).nonzero().squeeze(1)
                    if len(labelled) > self.batch_users:
                        labelled = labelled[torch.randperm(len(labelled), generator=generator)[: self.batch_users]
                                            .to(labelled.device)]
                    edited = original + offsets[a]
                    loss = loss + represented_mmd(edited, labelled, [g.onehot[labelled]],
                                                  self.estimator == "null-corrected", model)
                    loss = loss + self.alpha * offsets[a].pow(2).sum(1).mean() / scale
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step % 20 == 0:
                    _report(progress, 0.7 * step / self.calibration_steps, f"calibrating {', '.join(missing)}: step {step}")
            for a, name in enumerate(missing):
                while len(_CALIBRATION_CACHE) >= CALIBRATION_CACHE_SIZE:
                    _CALIBRATION_CACHE.pop(next(iter(_CALIBRATION_CACHE)))  # oldest first
                _CALIBRATION_CACHE[keys[name]] = offsets[a].detach().clone()
        return {name: _CALIBRATION_CACHE[keys[name]] for name in labels}, len(labels) - len(missing)

    def _run(self, original, labels, model, split, progress, device):
        start = time.perf_counter()
        model = model if uses_derived(model, self.representations, original) else None
        offsets, cached_before = self._calibrated(original, labels, model, progress)
        calibration_seconds = time.perf_counter() - start
        groups = group_codes(labels, len(original), device)
        stacked = torch.stack([offsets[n] for n in labels])  # A × N × d
        scale = total_variance(original)
        raw_weights = torch.zeros(len(labels), device=device, requires_grad=True)  # w = softplus(raw)·c, w0 = 1
        optimizer = torch.optim.Adam([raw_weights], lr=0.05)
        labelled = torch.stack([g.onehot.sum(1) > 0 for g in groups]).any(0).nonzero().squeeze(1)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        history = []
        for step in range(self.combination_steps):
            weights = torch.nn.functional.softplus(raw_weights) / np.log(2.0)
            table = original + (weights[:, None, None] * stacked).sum(0)
            batch = labelled
            if len(batch) > self.combination_users:
                batch = batch[torch.randperm(len(batch), generator=generator)[: self.combination_users].to(batch.device)]
            loss = represented_mmd(table, batch, [g.onehot[batch] for g in groups],
                                   self.estimator == "null-corrected", model)
            loss = loss + self.alpha * regulariser(table, original, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
        weights = (torch.nn.functional.softplus(raw_weights) / np.log(2.0)).detach()
        combined = original + (weights[:, None, None] * stacked).sum(0)
        if self.refine_steps:
            _report(progress, 0.9, "refining the combination")
            config = D2DR(alpha=self.alpha, lr=self.lr, batch_users=self.batch_users, seed=self.seed,
                          estimator=self.estimator, representations=self.representations)
            combined, refine_history, _ = d2d_optimise(original, combined, groups, config, model, None,
                                                       steps=self.refine_steps)
            history.extend(refine_history)
        weights_by_name = dict(zip(labels, [round(float(w), 3) for w in weights]))
        notes = f"combination weights {weights_by_name}; {cached_before} of {len(labels)} calibrations reused from the cache"
        details = {"weights": weights_by_name, "reused_calibrations": cached_before,
                   "new_calibrations": len(labels) - cached_before, "calibration_seconds": calibration_seconds,
                   "combination_seconds": time.perf_counter() - start - calibration_seconds}
        return combined, history, {"notes": notes, "details": details}


def clear_calibration_cache() -> None:
    _CALIBRATION_CACHE.clear()


# --------------------------------------------------------------------------------------------- in-training


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


@dataclass(frozen=True)
class InTrainingBase(AttributeUnlearner):
    """Shared by the in-training baselines: retrain the recommender from scratch with an extra loss term."""

    needs_model: ClassVar[bool] = True
    tradeoff_field: ClassVar[str | None] = "weight"
    weight: float = hp(1.0, "weight of the unlearning term in the training loss", 1e-3, 100.0, True)
    max_epochs: int = hp(100, "maximum training epochs (early stopping on validation)", 1, 300)
    seed: int = hp(0, "random seed")

    def _run(self, original, labels, model, split, progress, device):
        from .training import DEFAULT_LR, TrainConfig, train_model

        if split is None:
            raise ValueError(f"{self.label} retrains the recommender and needs its training data (split)")
        groups = group_codes(labels, len(original), device)
        lr = DEFAULT_LR.get(model.kind, 5e-3)
        hook, extra = self._hook(groups, original.shape[1], device, lr)
        config = TrainConfig(dim=model.dim, lr=lr, max_epochs=self.max_epochs,
                             seed=self.seed, **({"n_layers": model.n_layers} if model.kind == "lightgcn" else {}))
        result = train_model(model.kind, split, config, progress=progress, device=device, loss_hook=hook,
                             extra_parameters=extra)
        return result.model.user_table(), [h["loss"] for h in result.history], {"model": result.model}


@dataclass(frozen=True)
class InTRetrain(InTrainingBase):
    """InT-Retrain: retrain with the groups' MMD (on each batch's users) added to the BPR loss."""

    name: ClassVar[str] = "int_retrain"
    label: ClassVar[str] = "InT-Retrain"
    description: ClassVar[str] = "Retrain the recommender with an MMD term in its loss: a full training run."

    def _hook(self, groups, dim, device, lr):
        def hook(model, users):
            users = users.unique()
            # null-corrected: the biased MMD on every batch over-corrects into a mirrored AUC near 0 under CV
            return self.weight * multi_kernel_mmd(model.user_rows(users), [g.onehot[users] for g in groups], True)
        return hook, []


@dataclass(frozen=True)
class AdvInT(InTrainingBase):
    """Adv-InT: retrain with an adversary (MLP d→16→C per attribute) behind a gradient-reversal layer."""

    name: ClassVar[str] = "adv_int"
    label: ClassVar[str] = "Adv-InT"
    description: ClassVar[str] = "Retrain the recommender against an adversary through gradient reversal."
    objective: str = hp("reversal", "'reversal': gradient reversal, the recommender maximises the adversary's loss "
                        "(SPEC); 'confusion': it pushes the adversary's predictions to the class prior",
                        choices=("reversal", "confusion"))

    def _hook(self, groups, dim, device, lr):
        torch.manual_seed(self.seed)
        adversaries = [torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, g.n_classes)).to(device) for g in groups]
        priors = [g.onehot.sum(0) / g.onehot.sum() for g in groups]

        def hook(model, users):
            users = users.unique()
            rows = model.user_rows(users)
            loss = 0.0
            for g, adversary, prior in zip(groups, adversaries, priors):
                known = g.onehot[users].sum(1) > 0
                if not known.any():
                    continue
                target = g.onehot[users][known].argmax(1)
                if self.objective == "reversal":
                    reversed_rows = _GradientReversal.apply(rows[known], self.weight)
                    loss = loss + torch.nn.functional.cross_entropy(adversary(reversed_rows), target)
                else:  # confusion: the adversary learns on detached rows; the recommender pushes it to the prior
                    loss = loss + torch.nn.functional.cross_entropy(adversary(rows[known].detach()), target)
                    log_p = torch.nn.functional.log_softmax(adversary(rows[known]), dim=1)
                    loss = loss - self.weight * (prior * log_p).sum(1).mean()
            return loss
        # the adversary learns ADVERSARY_LR_FACTOR times faster than the recommender, so it keeps up
        return hook, [{"params": [p for a in adversaries for p in a.parameters()], "lr": ADVERSARY_LR_FACTOR * lr}]


# --------------------------------------------------------------------------------------------- registry

UNLEARNERS: dict[str, type[AttributeUnlearner]] = {
    cls.name: cls for cls in (D2DR, U2UR, U2URClosedForm, LinearEraser, LegoStyle, JointD2DR, SequentialD2DR,
                              InTRetrain, AdvInT)
}


def make_unlearner(name: str, **params) -> AttributeUnlearner:
    if name not in UNLEARNERS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(UNLEARNERS)}")
    return UNLEARNERS[name](**params)


def hyperparameters(name: str) -> list[HyperParameter]:
    """The method's hyper-parameters with defaults, help and ranges, for building widgets."""
    out = []
    for f in fields(UNLEARNERS[name]):
        meta = f.metadata
        out.append(HyperParameter(f.name, type(f.default), f.default, meta.get("help", ""), meta.get("low"),
                                  meta.get("high"), meta.get("log", False), meta.get("choices", ())))
    return out
