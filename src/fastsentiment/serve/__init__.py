"""`fastsentiment serve`: an HTTP server with dynamic batching."""
