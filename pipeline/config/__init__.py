"""The typed schema of the pipeline's own config keys (``schema``) and the checks that turn a wrong value into one
line (``typecheck``): a leaf layer that imports no stage. Resolving a run's config (derived values, cross-field
checks) is pipeline/stages/resolve.py."""
