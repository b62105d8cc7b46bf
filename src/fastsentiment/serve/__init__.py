"""`fastsentiment serve`: an HTTP server with dynamic batching."""

# Tokens up to which a server runs every shape of a model call once before it is ready, where the runtime prepares
# kernels per input shape (app.py `warm_shapes`): SST-2's sentences reach 64 tokens with the built-in model's
# tokenizer (test set: median 24, p99 54), reviews and posts more. Kept here, apart from the server's modules, so that
# every command's option list names these without importing them (asyncio among them).
WARM_UP_LENGTH = 128

# Where the runtime prepares kernels per input shape, the server pads each model call to a multiple of this many
# tokens: 8 times fewer shapes to prepare (the warm-up runs all of them in 3 s; every exact length of 1-8 texts took
# 17.6 s on the streams alone on the 2-core AMX Xeon), and on that CPU no slower (openvino:bf16, built-in model, SST-2
# test: 1,854 against 1,796 sentences/s, one text 2.36 against 2.53 ms; docs/benchmarks.md, note 27).
PAD_TO_MULTIPLE_OF = 8
