// A type that is not a format has no Quantizer: using one fails in one readable line.
// EXPECT: lowbit: no Quantizer specialization for this format type
#include <lowbit/quantizer.hpp>

struct NotAFormat {};

int main() { return static_cast<int>(lowbit::Quantizer<NotAFormat>::name().size()); }
