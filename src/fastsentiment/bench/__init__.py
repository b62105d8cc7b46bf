"""`fastsentiment bench` and `fastsentiment compare`: backends side by side, measured in clean processes."""
