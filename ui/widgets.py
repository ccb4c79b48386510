"""Widgets the pages share: attribute types, attacker and protocol pickers, method hyper-parameters, verdicts,
progress bars and the compute-device caption."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import streamlit as st
import torch

from core.attributes import ATTRIBUTE_TYPES, describe_attribute, infer_attribute_type
from core.audit import ATTACKER_SETS, ATTACKERS, AttributeVerdict
from core.data import AttributeLabels, DataError, encode_attribute
from core.device import describe
from core.unlearning.attribute import hyperparameters

from .cache import compute_device, run_store

CUSTOM = "custom"
ATTACKER_SET_NAMES = {"default": "Default", "thorough": "Thorough (slower)", CUSTOM: "Custom"}


def device_caption() -> str:
    device = compute_device()
    return f"Compute device: {describe(device)}" + (" (no GPU found)" if not torch.cuda.is_available() else "")


def require_sign_in() -> None:
    """Only when .streamlit/secrets.toml has an [auth] section (see the README, "Sharing the dashboard"): everyone
    signs in with Streamlit's built-in OpenID Connect sign-in before seeing anything."""
    try:
        configured = "auth" in st.secrets
    except FileNotFoundError:  # no secrets file: a loopback-only dashboard, no sign-in
        return
    if not configured:
        return
    if not st.user.is_logged_in:
        st.title("Privacy audit for recommender systems")
        st.info("This dashboard holds personal data: sign in to continue.")
        st.button("Sign in", on_click=st.login, type="primary")
        st.stop()
    st.sidebar.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
    st.sidebar.button("Sign out", on_click=st.logout)


def settings_panel() -> None:
    """The sidebar's settings: the compute device in use and where the run history is kept."""
    with st.sidebar.expander("Settings", icon=":material/settings:"):
        st.caption(f"**Device**: {describe(compute_device())}. Chosen once when the server starts: CUDA when a GPU "
                   "is present, else the CPU; set PRIVACY_AUDIT_DEVICE=cpu or cuda before starting to choose.")
        store = run_store()
        st.caption(f"**History**: {store.location} ({len(store.records())} runs kept; readable by this user only). "
                   "Set PRIVACY_AUDIT_RUNS to a .sqlite path before starting to keep it elsewhere.")


def progress_callback(bar) -> callable:
    """Adapt core's progress(fraction, message) to an st.progress bar."""
    return lambda fraction, message: bar.progress(min(1.0, max(0.0, fraction)), text=message)


def auc_explanation(tolerance: float) -> str:
    """AUC and the two-sided gap in plain words, for the captions above verdicts."""
    return (f"AUC is the chance that the attacker scores a random user of one group above one of another: 0.5 = no "
            f"better than chance; far below 0.5 is leakage too, mirrored (the attacker's guesses are systematically "
            f"reversed, and flipping them recovers the attribute). So the gap |AUC − 0.5| is two-sided: an attribute "
            f"leaks when its gap exceeds the tolerance ({tolerance:.3f}) beyond chance, and a gap above the tolerance "
            f"that is not significant is *inconclusive* (too few users to tell).")


# ---------------------------------------------------------------------------------------------- attributes


def attribute_labels(prefix: str, attributes: pd.DataFrame, names: list[str], n_bins: int = 4,
                     ) -> dict[str, AttributeLabels] | None:
    """Encode each chosen attribute with its type (inferred, overridable per attribute) and show how it was
    encoded; None (with the reasons shown) when an attribute cannot be encoded as asked."""
    labels, failed = {}, False
    for name in names:
        inferred, _ = infer_attribute_type(attributes[name])
        key, memo = f"{prefix}_type_{name}", f"{prefix}_type_{name}_inferred"
        if key not in st.session_state or st.session_state.get(memo) != inferred:  # new data: start from inference
            st.session_state[key] = inferred
            st.session_state[memo] = inferred
        left, right = st.columns([1, 3], vertical_alignment="center")
        kind = left.selectbox(f"Type of {name}", ATTRIBUTE_TYPES, key=key,
                              format_func=lambda k, inferred=inferred: f"{k} (inferred)" if k == inferred else k,
                              help="binary: two values; categorical: each value a class; ordinal: ordered classes; "
                                   "numeric: a measurement cut into quantile bins. Inferred from the column; "
                                   "override it when the file's codes say otherwise.")
        try:
            labels[name] = encode_attribute(attributes[name], name, n_bins=n_bins, kind=kind)
        except DataError as error:
            right.error(str(error))
            failed = True
            continue
        info = describe_attribute(labels[name])
        counts = ", ".join(f"{c} {n:,}" for c, n in list(info["counts"].items())[:8])
        more = f" and {info['n_classes'] - 8} more" if info["n_classes"] > 8 else ""
        right.caption(f"{info['n_classes']} classes over {info['n_labelled']:,} labelled users ({counts}{more}). "
                      + " ".join(info["notes"]))
    return None if failed else labels


# ---------------------------------------------------------------------------------------------- attackers


def attacker_picker(prefix: str, container=st) -> tuple[str, ...]:
    """The attacker set: the default one (MLP, XGBoost, logistic regression), the thorough one, or a custom list."""
    choice = container.radio("Attackers", list(ATTACKER_SET_NAMES), horizontal=True, key=f"{prefix}_attacker_set",
                             format_func=ATTACKER_SET_NAMES.get,
                             help="Default: the audit's standard attackers. Thorough: adds a wider MLP, an RBF-kernel "
                                  "attacker and a tuned XGBoost, for release audits.")
    if choice == CUSTOM:
        chosen = container.multiselect("Custom attackers", list(ATTACKERS), default=list(ATTACKER_SETS["default"]),
                                       key=f"{prefix}_attackers", format_func=lambda a: ATTACKERS[a].label)
        return tuple(chosen)
    container.caption(", ".join(ATTACKERS[a].label for a in ATTACKER_SETS[choice]))
    return ATTACKER_SETS[choice]


# ---------------------------------------------------------------------------------------------- methods


WIDEST_SLIDER = 1000.0  # a linear float range wider than this gets a number box (seconds up to hours, say)


def _log_grid(low: float, high: float, default: float) -> list[float]:
    """1-2-5 steps per decade between low and high, with the default included."""
    values = {float(f"{m * 10.0 ** e:.6g}") for e in range(-6, 7) for m in (1, 2, 5)}
    return sorted(v for v in values | {float(default)} if low <= v <= high)


def hyperparameter_widgets(name: str, prefix: str, fixed: Mapping[str, object] | None = None,
                           specs: Sequence | None = None, numbers_as_inputs: bool = False) -> dict:
    """One widget per hyper-parameter of a method, defaults pre-set; `fixed` values (set elsewhere on the page,
    such as the target) get no widget. `specs`: the method's hyper-parameters when it is not an attribute-unlearning
    method (the deletion registry's, say); `numbers_as_inputs`: typed number boxes instead of sliders. Returns
    every value."""
    fixed = dict(fixed or {})
    params = {}
    for hp in hyperparameters(name) if specs is None else specs:
        if hp.name in fixed:
            params[hp.name] = fixed[hp.name]
            continue
        key = f"{prefix}_{name}_{hp.name}"
        if hp.choices:
            params[hp.name] = st.selectbox(hp.name, hp.choices, index=hp.choices.index(hp.default), key=key,
                                           help=hp.help)
        elif hp.kind is bool:
            params[hp.name] = st.checkbox(hp.name, value=hp.default, key=key, help=hp.help)
        elif hp.kind is float and (numbers_as_inputs or (hp.high is not None and not hp.log
                                                         and hp.high - (hp.low or 0.0) > WIDEST_SLIDER)):
            params[hp.name] = st.number_input(hp.name, float(hp.low or 0.0), float(hp.high or 1e6), float(hp.default),
                                              format="%g", key=key, help=hp.help)
        elif numbers_as_inputs:
            params[hp.name] = int(st.number_input(hp.name, int(hp.low or 0), int(hp.high or 10**9), int(hp.default),
                                                  step=1, key=key, help=hp.help))
        elif hp.kind is float and hp.log:
            params[hp.name] = st.select_slider(hp.name, _log_grid(hp.low, hp.high, hp.default), value=hp.default,
                                               key=key, help=hp.help)
        elif hp.kind is float:
            params[hp.name] = st.slider(hp.name, float(hp.low), float(hp.high), float(hp.default), key=key,
                                        help=hp.help)
        elif hp.kind is int and hp.low is not None:
            params[hp.name] = st.slider(hp.name, int(hp.low), int(hp.high), int(hp.default), key=key, help=hp.help)
        else:
            params[hp.name] = st.number_input(hp.name, value=hp.default, step=1, key=key, help=hp.help)
    return params


def has_target(name: str) -> bool:
    """Whether the method aims at a leakage target (has a `target_gap` hyper-parameter)."""
    return any(hp.name == "target_gap" for hp in hyperparameters(name))


# ---------------------------------------------------------------------------------------------- verdicts

STATUS_MESSAGE = {"leaks": st.error, "inconclusive": st.warning, "no leak": st.success}


def verdict_messages(verdicts: Mapping[str, AttributeVerdict], several_representations: bool) -> None:
    """One message per attribute, coloured by its status; with several representations, the worst one's."""
    for verdict in verdicts.values():
        where = f" (worst representation: {verdict.representation})" if several_representations else ""
        STATUS_MESSAGE[verdict.status](verdict.explanation + where)
