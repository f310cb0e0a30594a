"""What the machine offers and how to use it: CPU facts, memory and XLA switches, locks,
progress lines, quiet imports.  A regular package: a namespace package is left out of a
non-editable install (setup.cfg finds packages by their __init__.py)."""
