"""`fastsentiment serve`: an HTTP server with dynamic batching."""

# Tokens up to which a server runs a lone text of every length once before it is ready, where the runtime prepares
# kernels per input shape (app.py `warm_shapes`): SST-2's sentences reach 64 tokens with the built-in model's
# tokenizer (test set: median 24, p99 54), reviews and posts more. On the 2-core EPYC (OpenVINO int8, built-in model,
# the streams and the one-call model) 64 took 1.0 s, 128 took 2.8 s and 512 took 35 s. Kept here, apart from the
# server's modules, so that every command's option list names it without importing them (asyncio among them).
WARM_UP_LENGTH = 128
