"""The privacy-audit library: data, recommenders, metrics, attacks, unlearning. No UI code lives here."""
