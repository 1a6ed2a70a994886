// Uniform with 0 bits must not compile.
// EXPECT: lowbit::Uniform: Bits must be between 1 and 8
#include <lowbit/format/uniform.hpp>

int main() { return lowbit::Uniform<0, 64>::group_size; }
