# Empty dependencies file for loraplex_core.
# This may be replaced when dependencies are built.
