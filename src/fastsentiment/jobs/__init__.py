"""The file job: rows of files in, classified rows out, on this machine or on a Ray cluster.

    job.py            FileJob + ModelOptions: what to read, where to write, which engine, which model
    run.py            run_file_job: checks the job, then hands it to its engine
        |
    rows.py           RowSource -> Row: .txt/.csv/.tsv/.jsonl (TextReader; files, stdin or a pipe) or .parquet,
        |             each row's text checked by fastsentiment.texts, with a resumable position
    predict.py        predict_rows: split off bad rows -> Classifier.predict -> merge back (None for bad rows)
        |
        +-- local_engine.py  chunks through one Classifier here -> journal.py (OUT.partial/: parts + manifest,
        |                    so --resume loses and repeats nothing) -> sinks.py (console, csv/tsv/jsonl/parquet parts)
        +-- ray_engine.py    the same predict step in a pool of Ray actors; Ray's readers and writers, with
                             sinks.py's record and Parquet schema rules

The public API (`fastsentiment.Classifier`) imports nothing from here; the CLI calls `run_file_job`.
"""
