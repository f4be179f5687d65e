"""The recipes, one script per objective; installed as `hfssl.recipes` and run with `hfssl NAME [ARGS]` (see
`hfssl.cli`) or `python -m hfssl.recipes.NAME`."""
