# Empty compiler generated dependencies file for loraplex.
# This may be replaced when dependencies are built.
