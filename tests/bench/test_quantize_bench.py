"""The ``quantize`` bench section's plumbing (the measurement itself: ``python -m cogsample.bench.quantize``)."""

from cogsample.bench import quantize as bq
from cogsample.bench.suite import SECTIONS


def test_the_section_is_listed_and_fp8_is_skipped_without_a_gpu_and_the_table_reads_it():
    assert "quantize" in SECTIONS
    runs = bq._ordered(bq.RUNS_TRAINED + bq.RUNS_2B)
    assert runs[0].key == "trained/float32/none" and all(r.mode != "none" for r in runs[4:])
    fp8 = bq.Run("2b", "bfloat16", "fp8")
    why = bq._unsupported(fp8)
    assert why is None or why.startswith("not measured: --quantize fp8 needs a CUDA GPU")
    base = {"weight_bytes": 2**20, "resident_mib": 10, "peak_sampling_mib": 20, "s_per_step": 1.0}
    close = {"rel_rms": 0.03, "max_abs": 0.5}
    section = {
        "runs": {
            "trained/bfloat16/none": base,
            "trained/bfloat16/int8": {**base, "s_per_step_ratio": 0.9, "vs_unquantized": close},
            "2b/bfloat16/fp8": {"skipped": "not measured: no GPU"},
        }
    }
    rows = bq.table_rows(section)
    assert len(rows) == 5
    assert "| 0.0300 / 0.500 |" in rows[3] and "x0.90" in rows[3]
    assert "not measured: no GPU" in rows[4]
