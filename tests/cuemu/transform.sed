# transform.sed - turns a .cu file into C++ for tests/cuemu/cuemu.h (see there):
# kernel launches and dynamic shared memory are the two pieces of CUDA syntax
# that a header cannot define. Line numbers stay as they were.
s/([A-Za-z_][A-Za-z0-9_]*(<[^<>()]*>)?)<<<(([^>]|>[^>]|>>[^>])*)>>>\(/(cuemu::Launch("\1", \3) * [](auto... cuemu_a) { \1(cuemu_a...); })(/g
s/extern __shared__ (__align__\([0-9]+\) )?([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_]) +([A-Za-z_][A-Za-z0-9_]*)\[\];/\2 *\3 = (\2 *)cuemu_dynamic_smem();/
