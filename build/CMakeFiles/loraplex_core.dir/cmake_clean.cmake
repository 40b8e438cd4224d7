file(REMOVE_RECURSE
  "CMakeFiles/loraplex_core.dir/src/util/dtype.c.o"
  "CMakeFiles/loraplex_core.dir/src/util/dtype.c.o.d"
  "CMakeFiles/loraplex_core.dir/src/util/log.c.o"
  "CMakeFiles/loraplex_core.dir/src/util/log.c.o.d"
  "CMakeFiles/loraplex_core.dir/src/util/status.c.o"
  "CMakeFiles/loraplex_core.dir/src/util/status.c.o.d"
  "CMakeFiles/loraplex_core.dir/src/util/util.c.o"
  "CMakeFiles/loraplex_core.dir/src/util/util.c.o.d"
  "libloraplex_core.a"
  "libloraplex_core.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/loraplex_core.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
