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


def generate(
    out: Path, customers: int = 2000, merchants: int = 200, days: int = 30, seed: int = 20261123
) -> dict[str, Path]:
    """Write every data file of the reference platform into ``out``; returns name -> path."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    customer_ids = np.arange(100_001, 100_001 + customers, dtype=np.int64)
    merchant_ids = np.arange(5_001, 5_001 + merchants, dtype=np.int64)
    txn = _transactions(rng, customer_ids, days)
    merchant, m_risk = _merchants(rng, merchant_ids, days)
    tables = {
        "customer-transactions": ("customer_transactions.parquet", txn),
        "merchant-risk": ("merchant_risk.parquet", merchant),
        "fraud-labels": (
            "fraud_labels.parquet",
            _fraud_labels(rng, txn, customer_ids=customer_ids, merchant_ids=merchant_ids, m_risk=m_risk, days=days),
        ),
        **_customers(rng, customer_ids),
        # who the nightly churn batch scores: every customer once, as of day 28 (no randomness: the other files
        # stay byte-identical)
        "churn-scoring-customers": (
            "churn_scoring_customers.parquet",
            pa.table({"customer_id": pa.array(customer_ids), "event_ts": _timestamps(np.full(customers, 28))}),
        ),
    }
    written: dict[str, Path] = {}
    for name, (filename, table) in tables.items():
        written[name] = out / filename
        _write(table, written[name])
    return written


def _transactions(rng: np.random.Generator, customer_ids: np.ndarray, days: int) -> pa.Table:
    """One rolling-7-day aggregate per customer per day."""
    customers = customer_ids.size
    spend_level = rng.lognormal(mean=5.0, sigma=0.6, size=customers)
    travel = rng.beta(1.2, 12.0, size=customers)
    c_idx = np.repeat(np.arange(customers), days)
    day = np.tile(np.arange(days), customers)
    count = rng.poisson(lam=np.maximum(1.0, spend_level[c_idx] / 40.0)).astype(np.int64)
    avg = (spend_level[c_idx] * rng.lognormal(0.0, 0.25, size=c_idx.size)).astype(np.float32)
    return pa.table(
        {
            "customer_id": pa.array(customer_ids[c_idx]),
            "event_ts": _timestamps(day),
            "txn_count_7d": pa.array(count),
            "txn_amount_sum_7d": pa.array((avg * np.maximum(count, 1)).astype(np.float32)),
            "txn_amount_avg_7d": pa.array(avg),
            "txn_amount_max_7d": pa.array((avg * rng.uniform(1.0, 3.0, size=c_idx.size)).astype(np.float32)),
            "foreign_txn_ratio_7d": pa.array(
                np.clip(travel[c_idx] + rng.normal(0, 0.03, size=c_idx.size), 0, 1).astype(np.float32)
            ),
            "night_txn_ratio_7d": pa.array(rng.beta(1.0, 15.0, size=c_idx.size).astype(np.float32)),
        }
    )


def _merchants(rng: np.random.Generator, merchant_ids: np.ndarray, days: int) -> tuple[pa.Table, np.ndarray]:
    """Weekly merchant risk snapshots, and each merchant's true risk."""
    merchants = merchant_ids.size
    m_risk = rng.beta(1.0, 60.0, size=merchants)
    weeks = np.arange(0, days, 7)
    m_idx = np.repeat(np.arange(merchants), weeks.size)
    table = pa.table(
        {
            "merchant_id": pa.array(merchant_ids[m_idx]),
            "event_ts": _timestamps(np.tile(weeks, merchants)),
            "merchant_fraud_rate_30d": pa.array(
                np.clip(m_risk[m_idx] + rng.normal(0, 0.002, m_idx.size), 0, 1).astype(np.float32)
            ),
            "merchant_txn_count_30d": pa.array(rng.poisson(900, m_idx.size).astype(np.int64)),
        }
    )
    return table, m_risk


def _fraud_labels(
    rng: np.random.Generator,
    txn: pa.Table,
    *,
    customer_ids: np.ndarray,
    merchant_ids: np.ndarray,
    m_risk: np.ndarray,
    days: int,
) -> pa.Table:
    """Transactions sampled after the first week; fraud is driven by the features of that day."""
    n_labels = customer_ids.size * 5
    lc = rng.integers(0, customer_ids.size, n_labels)
    lm = rng.integers(0, merchant_ids.size, n_labels)
    ld = rng.integers(7, days, n_labels)
    row = lc * days + ld
    foreign = txn["foreign_txn_ratio_7d"].to_numpy()[row]
    night = txn["night_txn_ratio_7d"].to_numpy()[row]
    ratio = txn["txn_amount_max_7d"].to_numpy()[row] / np.maximum(txn["txn_amount_avg_7d"].to_numpy()[row], 1.0)
    logit = -5.6 + 6.0 * foreign + 9.0 * night + 80.0 * m_risk[lm] + 0.6 * np.log(ratio)
    return pa.table(
        {
            "customer_id": pa.array(customer_ids[lc]),
            "merchant_id": pa.array(merchant_ids[lm]),
            "event_ts": _timestamps(ld),
            "is_fraud": pa.array((rng.uniform(size=n_labels) < _sigmoid(logit)).astype(np.int64)),
        }
    )


def _customers(rng: np.random.Generator, customer_ids: np.ndarray) -> dict[str, tuple[str, pa.Table]]:
    """Profile and app-engagement snapshots at day 0 and day 14, and churn labels driven by them."""
    customers = customer_ids.size
    snap_days = np.array([0, 14])
    p_idx = np.repeat(np.arange(customers), snap_days.size)
    p_day = np.tile(snap_days, customers)
    tenure = rng.integers(1, 240, customers)
    products = rng.integers(1, 6, customers)
    salary = (rng.uniform(size=customers) < 0.55).astype(np.int64)
    profile = pa.table(
        {
            "customer_id": pa.array(customer_ids[p_idx]),
            "event_ts": _timestamps(p_day),
            "tenure_months": pa.array(tenure[p_idx].astype(np.int64) + p_day // 30),
            "age": pa.array(rng.integers(21, 70, customers)[p_idx].astype(np.int64)),
            "num_products": pa.array(products[p_idx].astype(np.int64)),
            "balance_aed": pa.array(rng.lognormal(9.5, 1.1, customers).astype(np.float32)[p_idx]),
            "salary_transfer": pa.array(salary[p_idx]),
        }
    )
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
    logit = 1.2 - 0.012 * tenure - 0.45 * products - 1.1 * salary - 0.06 * sessions + 0.035 * since_login
    logit = logit + 0.5 * tickets
    churn = pa.table(
        {
            "customer_id": pa.array(customer_ids),
            "event_ts": _timestamps(np.full(customers, 20)),
            "churned": pa.array((rng.uniform(size=customers) < _sigmoid(logit)).astype(np.int64)),
        }
    )
    return {
        "customer-profile": ("customer_profile.parquet", profile),
        "app-engagement": ("app_engagement.parquet", engagement),
        "churn-labels": ("churn_labels.parquet", churn),
    }


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
