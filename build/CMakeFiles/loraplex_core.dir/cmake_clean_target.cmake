file(REMOVE_RECURSE
  "libloraplex_core.a"
)
