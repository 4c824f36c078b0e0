"""Run-file format constants (HDF5, format_version 2; readers accept 1); see DESIGN.md section 4."""
FORMAT = "langevin_sim-run"
FORMAT_VERSION = 2  # 2: /records/time, /records/diverged_step, scales everywhere
CHUNK_BYTES = 1 << 20

# /commit: one int64 row written last after each block, the commit marker.
COMMIT = "commit"
COMMIT_FIELDS = ("n_records", "steps_done", "checkpoint_slot", "checkpoint_step", "complete")
N_RECORDS, STEPS_DONE, CKPT_SLOT, CKPT_STEP, COMPLETE = range(5)
