"""Running a file job on the engine it names."""

from __future__ import annotations

import sys
from dataclasses import replace

from fastsentiment.errors import InputError
from fastsentiment.jobs.job import FileJob, ModelOptions


def run_file_job(job: FileJob, options: ModelOptions) -> int:
    """Run the job on its engine; return how many rows could not be classified."""
    if job.source is None:  # texts given as arguments are rows in memory (local_engine.classify_rows), not a file
        raise InputError("run_file_job reads a file, a folder or stdin ('-'): give its source")
    job.check()
    options = replace(options, tune=options.tune or job.worth_tuning)
    if job.resume and job.out is not None and options.backend == "auto":
        from fastsentiment.jobs.journal import recorded_path

        recorded = recorded_path(job.out)
        if recorded is not None and options.precision in (None, recorded[1]):
            options = replace(options, backend=recorded[0], precision=recorded[1], tune=False)
    if job.engine == "ray":
        from fastsentiment.jobs.ray_engine import run_ray_job

        report = run_ray_job(job, options)
        sys.stderr.write(f"wrote {report.rows:,} rows to {job.out}/ in {report.files} {job.ray_output_format} files\n")
        return report.failed
    from fastsentiment.jobs.local_engine import classify_file
    from fastsentiment.jobs.rows import RowSource

    source = RowSource(job.source, job.column)  # a missing file or column fails before the model load
    return classify_file(
        options.load(),
        source,
        out=job.out,
        as_json=job.as_json,
        resume=job.resume,
        progress=job.source != "-",
        chunk_rows=job.chunk_rows,
        long_text=job.long_text,
    )
