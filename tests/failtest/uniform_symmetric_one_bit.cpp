// Symmetric 1-bit has no non-zero level (levels are ±(2^(b-1) - 1)·scale), so it must not compile.
// EXPECT: lowbit::Uniform: symmetric mode needs at least 2 bits
#include <lowbit/format/uniform.hpp>

int main() { return lowbit::Uniform<1, 128, lowbit::UniformMode::Symmetric>::bits; }
