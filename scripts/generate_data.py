"""Generate the reference platform's synthetic data for the `local` environment.

Deterministic: the same seed gives byte-identical parquet files, so tests and
demos see the same data everywhere. Columns match the `schema` declared by each
DataSource under specs/sources/ (a test checks that they do). Labels depend on
the features through a known logistic model, so trained models have something
real to learn.

Usage: python scripts/generate_data.py [--out data] [--customers 2000] [--days 30] [--seed 20261123]
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)


def _timestamps(days: np.ndarray) -> pa.Array:
    micros = (START.timestamp() + days.astype(np.int64) * 86400) * 1_000_000
    return pa.array(micros.astype(np.int64), type=pa.timestamp("us", tz="UTC"))


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", use_dictionary=False, write_statistics=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate(out: Path, customers: int = 2000, merchants: int = 200, days: int = 30, seed: int = 20261123) -> dict[str, Path]:
    """Write every data file of the reference platform into ``out``; returns name -> path."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    customer_ids = np.arange(100_001, 100_001 + customers, dtype=np.int64)
    merchant_ids = np.arange(5_001, 5_001 + merchants, dtype=np.int64)

    # Customer transactions: one rolling-7-day aggregate per customer per day.
    spend_level = rng.lognormal(mean=5.0, sigma=0.6, size=customers)
    travel = rng.beta(1.2, 12.0, size=customers)
    c_idx = np.repeat(np.arange(customers), days)
    day = np.tile(np.arange(days), customers)
    count = rng.poisson(lam=np.maximum(1.0, spend_level[c_idx] / 40.0)).astype(np.int64)
    avg = (spend_level[c_idx] * rng.lognormal(0.0, 0.25, size=c_idx.size)).astype(np.float32)
    total = (avg * np.maximum(count, 1)).astype(np.float32)
    peak = (avg * rng.uniform(1.0, 3.0, size=c_idx.size)).astype(np.float32)
    foreign = np.clip(travel[c_idx] + rng.normal(0, 0.03, size=c_idx.size), 0, 1).astype(np.float32)
    night = rng.beta(1.0, 15.0, size=c_idx.size).astype(np.float32)
    txn = pa.table(
        {
            "customer_id": pa.array(customer_ids[c_idx]),
            "event_ts": _timestamps(day),
            "txn_count_7d": pa.array(count),
            "txn_amount_sum_7d": pa.array(total),
            "txn_amount_avg_7d": pa.array(avg),
            "txn_amount_max_7d": pa.array(peak),
            "foreign_txn_ratio_7d": pa.array(foreign),
            "night_txn_ratio_7d": pa.array(night),
        }
    )
    written["customer-transactions"] = out / "customer_transactions.parquet"
    _write(txn, written["customer-transactions"])

    # Merchant risk: weekly snapshots.
    m_risk = rng.beta(1.0, 60.0, size=merchants)
    weeks = np.arange(0, days, 7)
    m_idx = np.repeat(np.arange(merchants), weeks.size)
    m_day = np.tile(weeks, merchants)
    merchant = pa.table(
        {
            "merchant_id": pa.array(merchant_ids[m_idx]),
            "event_ts": _timestamps(m_day),
            "merchant_fraud_rate_30d": pa.array(
                np.clip(m_risk[m_idx] + rng.normal(0, 0.002, m_idx.size), 0, 1).astype(np.float32)
            ),
            "merchant_txn_count_30d": pa.array(rng.poisson(900, m_idx.size).astype(np.int64)),
        }
    )
    written["merchant-risk"] = out / "merchant_risk.parquet"
    _write(merchant, written["merchant-risk"])

    # Fraud labels: transactions sampled after the first week, fraud driven by the features.
    n_labels = customers * 5
    lc = rng.integers(0, customers, n_labels)
    lm = rng.integers(0, merchants, n_labels)
    ld = rng.integers(7, days, n_labels)
    row = lc * days + ld
    logit = (
        -5.6
        + 6.0 * foreign[row]
        + 9.0 * night[row]
        + 80.0 * m_risk[lm]
        + 0.6 * np.log(peak[row] / np.maximum(avg[row], 1.0))
    )
    is_fraud = (rng.uniform(size=n_labels) < _sigmoid(logit)).astype(np.int64)
    labels = pa.table(
        {
            "customer_id": pa.array(customer_ids[lc]),
            "merchant_id": pa.array(merchant_ids[lm]),
            "event_ts": _timestamps(ld),
            "is_fraud": pa.array(is_fraud),
        }
    )
    written["fraud-labels"] = out / "fraud_labels.parquet"
    _write(labels, written["fraud-labels"])

    # Customer profile and app engagement: one snapshot per customer at day 0 and day 14.
    snap_days = np.array([0, 14])
    p_idx = np.repeat(np.arange(customers), snap_days.size)
    p_day = np.tile(snap_days, customers)
    tenure = rng.integers(1, 240, customers)
    age = rng.integers(21, 70, customers)
    products = rng.integers(1, 6, customers)
    balance = rng.lognormal(9.5, 1.1, customers).astype(np.float32)
    salary = (rng.uniform(size=customers) < 0.55).astype(np.int64)
    profile = pa.table(
        {
            "customer_id": pa.array(customer_ids[p_idx]),
            "event_ts": _timestamps(p_day),
            "tenure_months": pa.array(tenure[p_idx].astype(np.int64) + p_day // 30),
            "age": pa.array(age[p_idx].astype(np.int64)),
            "num_products": pa.array(products[p_idx].astype(np.int64)),
            "balance_aed": pa.array(balance[p_idx]),
            "salary_transfer": pa.array(salary[p_idx]),
        }
    )
    written["customer-profile"] = out / "customer_profile.parquet"
    _write(profile, written["customer-profile"])

    sessions = rng.poisson(12, customers).astype(np.int64)
    since_login = rng.integers(0, 60, customers).astype(np.int64)
    tickets = rng.poisson(0.7, customers).astype(np.int64)
    engagement = pa.table(
        {
            "customer_id": pa.array(customer_ids[p_idx]),
            "event_ts": _timestamps(p_day),
            "sessions_30d": pa.array(sessions[p_idx]),
            "days_since_login": pa.array(since_login[p_idx]),
            "support_tickets_90d": pa.array(tickets[p_idx]),
        }
    )
    written["app-engagement"] = out / "app_engagement.parquet"
    _write(engagement, written["app-engagement"])

    churn_logit = (
        1.2
        - 0.012 * tenure
        - 0.45 * products
        - 1.1 * salary
        - 0.06 * sessions
        + 0.035 * since_login
        + 0.5 * tickets
    )
    churned = (rng.uniform(size=customers) < _sigmoid(churn_logit)).astype(np.int64)
    churn = pa.table(
        {
            "customer_id": pa.array(customer_ids),
            "event_ts": _timestamps(np.full(customers, 20)),
            "churned": pa.array(churned),
        }
    )
    written["churn-labels"] = out / "churn_labels.parquet"
    _write(churn, written["churn-labels"])
    return written


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args()
    for name, path in generate(args.out, customers=args.customers, days=args.days, seed=args.seed).items():
        rows = pq.ParquetFile(path).metadata.num_rows
        print(f"  {name:<24} {rows:>7} rows  {path}")


if __name__ == "__main__":
    main()
