"""Turning a model directory into artefacts for other runtimes (ONNX, CoreML)."""
