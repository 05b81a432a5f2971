"""The report: results records, per-query ranks, leaderboards and their plots, run summaries."""
