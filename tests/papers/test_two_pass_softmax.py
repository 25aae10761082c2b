"""Smoke test of the two-pass softmax claim (code path only: the smoke vector is not out of cache)."""

import numpy as np

from gradlab.claims.inline import check_evidence, run_claim_inline


def test_claim_smoke():
    ev = run_claim_inline("two-pass-softmax/out_of_cache", scale="smoke")
    check_evidence(ev, required_metrics=("ratio_recompute_over_two_pass", "ratio_reload_over_two_pass",
                                         "bandwidth_fraction_two_pass", "reload_fastest_in_cache", "llc_bytes",
                                         "out_of_cache", "in_cache", "out_of_cache_wall"))
    assert ev.verdict in ("passed", "failed", "inconclusive") and ev.criterion
    m = ev.metrics
    assert m["llc_bytes"] > 0 and m["max_abs_diff_to_recompute"] <= 1e-6
    assert np.isclose(m["ratio_recompute_over_two_pass"],
                      m["out_of_cache"]["median_s_recompute"] / m["out_of_cache"]["median_s_two_pass"])
    assert [h.label for h in ev.headline][0].startswith("out of cache")


def test_llc_fallbacks(tmp_path):
    from gradlab.kernels.bandwidth import DEFAULT_LLC_BYTES, _parse_size, cache_sizes, last_level_cache

    for level, kind, size in ((1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"),
                              (3, "Unified", "16384K")):
        d = tmp_path / f"index{level}{kind[0]}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    sizes, source = cache_sizes(tmp_path)
    assert source == "sysfs" and sizes == {1: 32 * 2**10, 2: 2**20, 3: 16 * 2**20}
    assert last_level_cache(tmp_path) == (16 * 2**20, "sysfs")
    assert _parse_size("8 MiB (1 instance)") == 8 * 2**20
    llc, src = last_level_cache(tmp_path / "missing")  # falls back to lscpu, else to the default
    assert src in ("lscpu", "default") and llc > 0
    if src == "default":
        assert llc == DEFAULT_LLC_BYTES
