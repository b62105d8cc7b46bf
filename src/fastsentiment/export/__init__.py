"""Turning a model directory into artefacts for other runtimes (ONNX, CoreML)."""

import threading

# One export at a time in a process: torch's ONNX exporter and tracer keep global state (two threads exporting at
# once failed an assertion inside torch), and the exporters' log silencing is process-wide. Re-entrant: an export
# may need another (the int8-static IR starts from the plain ONNX export).
EXPORTING = threading.RLock()
