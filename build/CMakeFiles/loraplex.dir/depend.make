# Empty dependencies file for loraplex.
# This may be replaced when dependencies are built.
