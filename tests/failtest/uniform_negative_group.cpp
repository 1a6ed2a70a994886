// A negative group size must not compile (whole-row groups are spelled lowbit::whole_row).
// EXPECT: lowbit::Uniform: GroupSize must be positive, or lowbit::whole_row for one group per row
#include <lowbit/format/uniform.hpp>

int main() { return lowbit::Uniform<4, -128>::bits; }
