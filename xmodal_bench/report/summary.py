"""The short text summary a run prints: what it scored, in every mode, and what it cost."""

from __future__ import annotations

from typing import Any


def format_summary(record: dict[str, Any]) -> str:
    """A short table of what a run scored and cost (from its results record)."""
    lines = [f"{record['method']} on {record['dataset']} ({record['protocol']} protocol, {record['scale']})"]
    for mode, entry in record["modes"].items():
        metrics = "  ".join(
            f"{k}={v:.2f}" for k, v in entry["metrics"].items() if "medr" not in k and "meanr" not in k
        )
        latency = entry.get("latency_ms", {})
        timing = "  ".join(f"{k}={v:.3f}" for k, v in latency.items())
        star = "*" if mode == record["primary_mode"] else " "
        lines.append(f" {star}{mode:<10} {metrics}")
        if timing:
            lines.append(f"  {'':<10} latency per query: {timing}")
        if (tau := entry.get("kendall_tau")) and tau["kendall_tau"] is not None:  # see xmodal_bench.bcls.tau
            lines.append(
                f"  {'':<10} kendall tau: {tau['kendall_tau']:.4f} (t2i {tau['t2i']:.4f}, i2t {tau['i2t']:.4f})"
            )
    eff = record["efficiency"]
    train = eff.get("train_samples_per_s")
    lines.append(
        "  train: "
        + (f"{train:.1f} samples/s" if train else "n/a")
        + f", encode: {eff['images_per_s']:.1f} images/s, {eff['texts_per_s']:.1f} texts/s"
        + f", params: {eff['params_m']:.2f} M, peak memory: {eff['peak_memory_mb']:.0f} MB"
    )
    lines.append(f"  results: {record.get('_run_dir', '')}/results.json")
    return "\n".join(lines)
