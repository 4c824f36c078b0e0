"""Run-file format constants (HDF5, format_version 2; readers accept 1); see DESIGN.md section 4."""
FORMAT = "langevin_sim-run"
FORMAT_VERSION = 2  # 2: /records/time, /records/diverged_step, scales everywhere
CHUNK_BYTES = 1 << 20

# /commit: one int64 row written last after each block, the commit marker.
COMMIT = "commit"
COMMIT_FIELDS = ("n_records", "steps_done", "checkpoint_slot", "checkpoint_step", "complete")
N_RECORDS, STEPS_DONE, CKPT_SLOT, CKPT_STEP, COMPLETE = range(5)


def json_default(obj):
    """`json.dumps(..., default=json_default)`: NumPy scalars and arrays (a parameter swept
    over np.float32 values, an array in `meta`) as Python numbers and lists."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"a {type(obj).__name__} ({obj!r:.60}) cannot be stored in the run file's JSON")
