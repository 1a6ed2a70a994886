// Uniform with 9 bits must not compile: codes are packed as 1..8-bit fields.
// EXPECT: lowbit::Uniform: Bits must be between 1 and 8
#include <lowbit/format/uniform.hpp>

int main() {
  lowbit::Uniform<9, 128> format{};
  (void)format;
  return 0;
}
