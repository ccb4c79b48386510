"""Aim at a target, both sides (SPEC section 5): probe the leakage of a candidate table with the audit's own
default attackers on held-out users, on every representation the model serves with, and verify with the full
audit, confirmed by a fresh one on other folds, before reporting success.

The probe is the audit itself with one repeat instead of three (5-fold CV, the same attackers), on a stratified
sample of at most `probe_users` users: no weaker than the audit's strongest default attacker, only noisier. The
verification is the full audit protocol; when it disagrees with the probe, the search goes on. A verified gap
must sit below the target by a re-audit margin (below), so that an independent audit of the same users with other
folds does not find the target missed: a "no leak" that one more audit would overturn is a false assurance. Near the
edge the audit is run longer (its margin then shrinks), and a candidate let in is confirmed by a fresh audit of the
same length on other folds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from ...audit import DEFAULT_ATTACKERS, MAX_AUDIT_USERS, CrossValidation, run_audit
from ...audit.attackers import ATTACKERS
from ...audit.verdict import AttackScore
from ...data import AttributeLabels, Split
from ...metrics import evaluate_full
from ...models import Recommender, served_representations
from ...progress import Progress, report

PROBE_USERS = 20_000  # users a probe attacks at most (stratified); its AUC's standard error is then ~0.005
PROBE = CrossValidation(n_splits=5, n_repeats=1)
VERIFY = CrossValidation(n_splits=5, n_repeats=3)
VERIFY_LONG = CrossValidation(n_splits=5, n_repeats=12)  # for a candidate whose gaps alone are within the target
REAUDIT_REPEATS = CrossValidation().n_repeats  # the repeats of the audit a re-auditor runs: the product's default
REAUDIT_CONFIDENCE = 0.95  # one-sided: how sure a verified "within the target" must be to survive a re-audit


Ranking = Callable[[torch.Tensor], float]  # a candidate table -> the share of the original's ranking quality it keeps


def validation_ranking(model: Recommender | None, split: Split | None, device: torch.device) -> Ranking | None:
    """The share of the original table's validation NDCG@20 a candidate table keeps (training items masked), so
    that a search can weigh two tables let in by their ranking cost; the test part is never looked at. None without
    a model and its split (an uploaded table): the search then keeps the first table let in."""
    if model is None or split is None or len(split.valid) == 0:
        return None

    def ndcg(table: torch.Tensor) -> float:
        with torch.no_grad():
            scorer = model.scorer(table.to(model.device))
            return evaluate_full(scorer, split, "valid", ks=(20,), device=model.device)["NDCG@20"]

    original: list[float] = []  # the model's own, measured at the first call only (most searches never ask)

    def kept(table: torch.Tensor) -> float:
        if not original:
            original.append(ndcg(model.user_table()))
        return ndcg(table) / original[0] if original[0] > 0 else 1.0

    return kept


def stage_seed(seed: int, stage: str) -> int:
    """The partition seed of one stage of a search (probe, verify, long verify). Derived apart from the plain
    audit seeds: a probe seeded 0 drew its folds like the first repeat of an audit seeded 0 (the product's default),
    so the candidate it picked for luck on those folds had the same luck in a third of the audit meant to check it."""
    return int(np.random.SeedSequence([seed, *map(ord, stage)]).generate_state(1)[0])


def margin_scale(repeats: int) -> float:
    """sqrt(1/R + 1/R_a): the noise of the difference between an R-repeat audit's mean AUC and a re-audit's."""
    return float(np.sqrt(1 / repeats + 1 / REAUDIT_REPEATS))


def reaudit_margin(scores: Sequence[AttackScore]) -> float:
    """How far an independent re-audit (same users, the default protocol of R_a repeats, other folds) may move an
    AUC this audit measured over R repeats, one-sided 95%: t·σ·sqrt(1/R + 1/R_a), σ² the variance between the
    protocol's repeats (each a fresh partition), pooled over the attackers; both audits carry that noise, and a
    longer audit only shrinks its own share. t is Student's quantile for the pooled degrees of freedom (2 per
    attacker at 3 repeats), not the normal one: so few repeats often under-read σ (the demo's logistic regression:
    0.005 between one audit's repeats, 0.012 over 30). Shrinks as the population grows; 0 when the protocol has one
    repeat (a probe)."""
    repeated = [s.repeat_aucs for s in scores if len(s.repeat_aucs) > 1 and not ATTACKERS[s.attacker].baseline]
    if not repeated:
        return 0.0
    freedom = sum(len(r) - 1 for r in repeated)
    pooled = sum(np.var(r, ddof=1) * (len(r) - 1) for r in repeated) / freedom
    quantile = stats.t.ppf(REAUDIT_CONFIDENCE, freedom)
    return float(quantile * np.sqrt(pooled) * margin_scale(min(len(r) for r in repeated)))


@dataclass(frozen=True)
class Leakage:
    """Signed gaps AUC − 0.5 of the attacker farthest from 0.5, per (representation, attribute)."""

    gaps: dict[tuple[str, str], float]
    protocol: str
    margins: dict[tuple[str, str], float] = field(default_factory=dict)  # re-audit margins (see reaudit_margin)

    @property
    def worst(self) -> float:
        """The largest two-sided gap |AUC − 0.5| over attributes and representations."""
        return max((abs(g) for g in self.gaps.values()), default=0.0)

    @property
    def bound(self) -> float:
        """The largest gap plus its re-audit margin: what must sit within the target for it to count as met."""
        return max((abs(g) + self.margins.get(k, 0.0) for k, g in self.gaps.items()), default=0.0)

    @property
    def worst_signed(self) -> float:
        return max(self.gaps.values(), key=abs, default=0.0)

    def describe(self) -> str:
        return ", ".join(f"{attribute} [{rep}] {gap:+.3f}" for (rep, attribute), gap in self.gaps.items())


def measure_leakage(table: torch.Tensor, labels: Mapping[str, AttributeLabels], model: Recommender | None,
                    device: torch.device, seed: int, protocol: CrossValidation = PROBE,
                    max_users: int = PROBE_USERS, attackers: tuple[str, ...] = DEFAULT_ATTACKERS) -> Leakage:
    """The leakage of `table` (and of every representation the model derives from it) under `protocol`."""
    with torch.no_grad():
        reps = served_representations(model, table.to(model.device) if model is not None else table)
    return measure_views(reps, labels, device, seed, protocol, max_users, attackers)


def measure_views(reps: Mapping[str, torch.Tensor], labels: Mapping[str, AttributeLabels], device: torch.device,
                  seed: int, protocol: CrossValidation = PROBE, max_users: int = PROBE_USERS,
                  attackers: tuple[str, ...] = DEFAULT_ATTACKERS) -> Leakage:
    """The leakage of each named representation under `protocol`."""
    gaps, margins = {}, {}
    for rep, values in reps.items():
        audit = run_audit(values, labels, attackers=attackers, protocol=protocol, n_permutations=0, seed=seed,
                          representation_name=rep, max_users=max_users, device=device)
        for verdict in audit.verdicts:
            gaps[(rep, verdict.attribute)] = verdict.auc - 0.5
            margins[(rep, verdict.attribute)] = reaudit_margin(
                [s for s in audit.scores if s.attribute == verdict.attribute])
    return Leakage(gaps, protocol.label, margins)


@dataclass
class TargetSearch:
    """Book-keeping of a target-driven run: every candidate probed, the best so far, and what to report."""

    original: torch.Tensor
    labels: Mapping[str, AttributeLabels]
    model: Recommender | None
    device: torch.device
    target_gap: float
    seed: int
    probe_users: int = PROBE_USERS
    ranking: Ranking | None = None  # validation NDCG@20 kept by a candidate (`validation_ranking`), when known
    log: list[str] = field(default_factory=list)
    best: tuple[float, torch.Tensor, Leakage] | None = None
    before: Leakage | None = None
    verified: Leakage | None = None
    last_audit: Leakage | None = None
    audited: tuple[float, torch.Tensor, Leakage] | None = None  # the fully audited candidate with the least bound
    probes: int = 0
    confirmations: int = 0

    def probe(self, table: torch.Tensor, what: str) -> Leakage:
        leakage = measure_leakage(table, self.labels, self.model, self.device, stage_seed(self.seed, "probe"), PROBE,
                                   self.probe_users)
        self.probes += 1
        self.log.append(f"{what}: probe worst |AUC − 0.5| {leakage.worst:.3f} ({leakage.describe()})")
        if self.best is None or leakage.worst < self.best[0]:
            self.best = (leakage.worst, table.detach().clone(), leakage)
        return leakage

    def start(self) -> Leakage:
        self.before = self.probe(self.original, "original")
        return self.before

    def unchanged_if_met(self, progress: Progress | None) -> tuple[torch.Tensor, list[float], dict] | None:
        """Probe the original; when it already meets the target (verified), a method's whole result: the original,
        unchanged, with a note. None when there is leakage to remove (`before` then holds the probe)."""
        report(progress, 0.02, "probing the original leakage")
        if self.within(self.start()) and self.verify(self.original, "original"):
            table, details, note = self.outcome(self.original)
            return table, [], {"notes": f"the original already meets the target; nothing was changed ({note})",
                               "details": details}
        return None

    def within(self, leakage: Leakage) -> bool:
        return leakage.worst <= self.target_gap

    def verify(self, table: torch.Tensor, what: str) -> bool:
        """The full audit protocol (5-fold CV ×3, the default attackers) on every representation; met when every
        gap plus its re-audit margin is within the target (near the edge, on a longer audit: `_audit`). A candidate
        let in must then be let in again by a fresh audit on other folds, as long as the one that let it in."""
        leakage, long = self._audit(table, what, "verify", "long")
        if leakage.bound <= self.target_gap:
            # the search audits candidate after candidate and stops at the first one let in, so the audit that let
            # it in is the luckiest of several; a fresh audit on other folds, picked by nothing, must agree, and its
            # numbers are the ones reported (the demo: a verification read 0.028 where audits on other folds read
            # 0.041-0.059). It is as long as the audit it confirms: a 3-repeat confirmation of a 12-repeat admission
            # charged the re-audit's noise twice over (ML-100K NeuMF, LEGO-style's gender alone: let in at
            # 0.017 + 0.015 by 12 repeats, refused at 0.027 + 0.028 by 3)
            self.confirmations += 1
            stage = f"confirm {self.confirmations}"
            leakage, _ = self._audit(table, what, stage, f"{stage} long", start_long=long)
            agreed = "confirmed" if leakage.bound <= self.target_gap else "NOT confirmed"
            self.log.append(f"{what}: {agreed} by a fresh audit on other folds ({leakage.protocol}): worst "
                            f"|AUC − 0.5| {leakage.worst:.3f}, with the re-audit margin {leakage.bound:.3f} "
                            f"({leakage.describe()})")
        self.last_audit = leakage
        if self.audited is None or leakage.bound < self.audited[0]:
            self.audited = (leakage.bound, table.detach().clone(), leakage)
        if leakage.bound <= self.target_gap:
            self.verified = leakage
            return True
        return False

    def _audit(self, table: torch.Tensor, what: str, stage: str, long_stage: str,
               start_long: bool = False) -> tuple[Leakage, bool]:
        """One full audit (`VERIFY`) of `table`, and whether it was the long one. A candidate whose gaps are within
        the target but not with their 3-repeat margin is audited again with 12 repeats (`VERIFY_LONG`) on other
        folds and judged on that audit alone: its gaps are then measured more exactly and its margin, from its own
        repeats, keeps only the re-audit's noise. The 3-repeat audit only screens: the 12-repeat one draws other
        partitions, so whatever luck let a candidate through the screen is not in the numbers that judge it.
        `start_long`: go straight to the long audit (a confirmation of one)."""
        if not start_long:
            leakage = measure_leakage(table, self.labels, self.model, self.device, stage_seed(self.seed, stage),
                                      VERIFY, MAX_AUDIT_USERS)
            self.log.append(f"{what}: full audit worst |AUC − 0.5| {leakage.worst:.3f}, with the re-audit margin "
                            f"{leakage.bound:.3f} ({leakage.describe()})")
            # not only when the 3-repeat spread, shrunk, would let it in: three repeats often under- or over-read
            # that spread (ML-100K BPR-MF, three attributes: 0.026 with a 0.044 margin, never audited longer),
            # and on 36 planted near-edge tables this rule claimed 15 where that one claimed 5, none leaking
            if not leakage.bound > self.target_gap >= leakage.worst:
                return leakage, False
        # other partitions than the three that brought it here, so that their luck is not counted twice
        leakage = measure_leakage(table, self.labels, self.model, self.device, stage_seed(self.seed, long_stage),
                                  VERIFY_LONG, MAX_AUDIT_USERS)
        why = "to confirm a long audit, audited" if start_long else "near the edge, audited again"
        self.log.append(f"{what}: {why} with {VERIFY_LONG.label}: worst |AUC − 0.5| {leakage.worst:.3f}, with the "
                        f"re-audit margin {leakage.bound:.3f}")
        return leakage, True

    def carried_by_items(self) -> dict[tuple[str, str], float]:
        """Signed gaps of each view the model derives from the table (LightGCN's propagated embeddings) with every
        user row set to zero: what that view carries through the items users interacted with. An edit of the user
        table reaches that part only through the other users who share a user's items (a 6,000-user demo's
        LightGCN: logistic regression 0.890 that way, 0.894 with the rows). Empty without derived views."""
        if self.model is None:
            return {}
        with torch.no_grad():
            views = self.model.derived_representations(torch.zeros_like(self.original, device=self.model.device))
        return measure_views(views, self.labels, self.device, stage_seed(self.seed, "items"), PROBE,
                             self.probe_users).gaps

    def explain_miss(self, details: dict, note: str) -> str:
        """On a miss with derived views: record what they carry through the items alone and, when that is beyond
        the target, say so in the note (no user-embedding method removes it directly)."""
        carried = self.carried_by_items()
        if not carried:
            return note
        details["with_user_rows_zeroed"] = {f"{a} [{r}]": round(g, 4) for (r, a), g in carried.items()}
        (rep, attribute), gap = max(carried.items(), key=lambda item: abs(item[1]))
        line = ", ".join(f"{a} [{r}] {g:+.3f}" for (r, a), g in carried.items())
        self.log.append(f"with every user row set to zero, the derived views' probe reads: {line}")
        details["log"] = list(self.log)
        if abs(gap) <= self.target_gap:
            return note
        return (f"{note} The {rep} view leaks {attribute} at |AUC − 0.5| = {abs(gap):.3f} even with every user row "
                f"set to zero: it carries the attribute through the items users interacted with, which an edit of the "
                f"user embeddings can only cancel through other users; the interactions themselves leak.")

    def outcome(self, table: torch.Tensor | None) -> tuple[torch.Tensor, dict, str]:
        """The table to return, the details and a note: the verified table when there is one, else the best
        iterate, and never a table that leaks more than the original did."""
        assert self.before is not None and self.best is not None
        reached = table is not None and self.verified is not None
        final = self.verified if reached else self.best[2]
        # not reached: the fully audited candidate within the target (but not its margin) beats a probe-only one
        near = (not reached and self.audited is not None and self.audited[2].worst <= self.target_gap
                and self.audited[2].worst < self.before.worst)
        if near:
            table, final = self.audited[1], self.audited[2]
        elif not reached:
            table = self.best[1]
            if self.best[0] >= self.before.worst:
                table = self.original
        details = {
            "target_gap": self.target_gap, "reached": reached, "budget_exhausted": not reached,
            "before": {f"{a} [{r}]": round(g, 4) for (r, a), g in self.before.gaps.items()},
            "after": {f"{a} [{r}]": round(g, 4) for (r, a), g in final.gaps.items()},
            "after_protocol": final.protocol, "probes": self.probes, "log": list(self.log),
            "reaudit_margin": round(max(final.margins.values(), default=0.0), 4),
            "within_target_not_margin": near,
        }
        if reached:
            note = (f"target |AUC − 0.5| ≤ {self.target_gap} reached and verified by the full audit (worst "
                    f"{self.verified.worst:.3f}; {self.verified.bound:.3f} with the margin a re-audit could move it).")
        elif near:
            note = (f"target |AUC − 0.5| ≤ {self.target_gap} met by the full audit (worst {final.worst:.3f}) but NOT "
                    f"with the margin a re-audit could move it ({final.bound:.3f}) within the budget: the result may "
                    f"fail one more audit; that audited candidate is returned.")
        elif table is self.original:
            note = (f"target |AUC − 0.5| ≤ {self.target_gap} NOT reached; no candidate leaked less than the original "
                    f"(worst {self.before.worst:.3f}), so the original table is returned unchanged.")
        else:
            note = (f"target |AUC − 0.5| ≤ {self.target_gap} NOT reached within the budget; the best iterate is "
                    f"returned (probe worst {self.best[0]:.3f}, before {self.before.worst:.3f}).")
        return table, details, note


def labelled_rows(groups) -> torch.Tensor:
    """Indices of the users labelled for at least one of the attributes."""
    return torch.stack([g.labelled for g in groups]).any(0).nonzero().squeeze(1)

