file(REMOVE_RECURSE
  "CMakeFiles/loraplex.dir/src/cli/main.c.o"
  "CMakeFiles/loraplex.dir/src/cli/main.c.o.d"
  "loraplex"
  "loraplex.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/loraplex.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
