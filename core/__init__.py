"""The inference engine, with no HTTP in it: the active model and its swaps, long-text planning, the
batch queue and its worker, the explain lane, and the errors they raise (core/errors.py). The HTTP
layer (app/) maps those errors to statuses in one table (app/errors.py)."""
